"""The twin's Kubernetes: a real control plane and a node agent standing in for the kubelet.

:mod:`twin.kube.control` starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler
(``python -m twin.kube``); :mod:`twin.kube.nodeagent` registers a Node and runs the pods bound to it
as local processes (``python -m twin.kube.nodeagent``). Plain Python: no Pulumi import.
"""
