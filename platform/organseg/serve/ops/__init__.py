"""What the Serve graph needs to run as a service, one module per concern.

``requests``  request ids, JSON request logs, error bodies (a 5xx names the request id, never a traceback)
``auth``      optional bearer-token authentication (HTTP ``Authorization``, gRPC ``authorization``)
``http``      the ASGI middleware that applies ids, auth, body-read progress timeouts and logs to every route
``retry``     bounded retries of calls that died with their replica (model errors are never retried)
``metrics``   ``organseg_*`` Prometheus metrics through Ray's metrics system
``tempdirs``  private per-replica temporary folders, swept when a replica starts
``reaper``    a watchdog that removes a local Ray cluster when the process that started it dies
"""
