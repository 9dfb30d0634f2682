"""Programs a twin server runs where production's cannot run here (see :mod:`twin.serverinit`).

Each module is one program, started on a server as ``/usr/bin/python3 -m twin.hostshims.<module>``
by a launcher that :mod:`twin.serverinit` puts where the real program would be. They use only the
standard library (the server's own Python, no virtualenv), and keep their state under
``/run/bazbii-twin`` (the server's tmpfs, gone with the server, like a reboot would take it).
"""
