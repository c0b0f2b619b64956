"""The local GPU node: DEVELOPMENT INFRASTRUCTURE that plays the kubelet.

It registers Node objects with cpu, memory, pods and ``nvidia.com/gpu`` capacity,
keeps their Lease and Ready condition fresh, and runs every pod bound to them as
local processes in the project's Python environment (images are not pulled).

What it does as a kubelet would: status transitions and container states,
exit codes, termination messages from ``terminationMessagePath`` (each pod sees
its own file, through a private mount namespace), env with ``valueFrom``
(fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef) and ``$(VAR)``
expansion, volumes (emptyDir, hostPath, configMap, secret, downwardAPI and the
projected service-account token), a unique pod IP from 127.X.0.0/16, GPU indices
per pod in ``CUDA_VISIBLE_DEVICES``, SIGTERM then SIGKILL on deletion.

What it does not: isolate processes beyond the mount namespace (pods share the
host network, so a server should bind its pod IP), run as the securityContext's
user (the project's Python lives under /root; admission still validates the
securityContext), or enforce resource limits.

``kubectl logs`` (with -f, --tail, --limit-bytes, --previous) works: the agent serves
the kubelet API's /containerLogs (kubeletapi.py). Each container's output is also in
``.localcluster/pods/<ns>_<pod>_<uid>/<container>.log``.
"""
