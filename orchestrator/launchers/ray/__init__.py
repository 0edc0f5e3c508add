"""``launcher: ray`` (runbooks/running-on-ray.md).

``launcher`` (the ``Launcher``) submits a Ray Job built by ``job``, whose entrypoint is ``driver``.
The driver runs ``attempts`` (the attempt loop, free of Ray and shared with the local launcher) over
a ``group`` of actors placed by ``plan`` (pure, also used by the local launcher), each owning one
``rank`` process. Only ``group``, ``driver`` and the Ray Jobs client in ``job`` import ray, lazily or
inside the job, so importing this package does not.
"""
