"""``launcher: ray`` (runbooks/running-on-ray.md).

``launcher`` (the ``Launcher``) submits a Ray Job built by ``job``, whose entrypoint is ``driver``.
The driver runs the attempt loop shared with the local launcher (``launchers.attempts``) over a
``group`` of actors in a placement group, each owning one ``rank`` process. Only ``group``, ``driver``
and the Ray Jobs client in ``job`` import ray, lazily or inside the job, so importing this package does not.
"""
