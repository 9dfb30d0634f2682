"""The local twin of production: what the engine tests and the rehearsal apply the program to."""
