"""python-worker: a RabbitMQ job worker: priority queues, built-in handlers, durable statuses.

One import namespace for the layout of the repository: `src/` is installed as `python_worker`
(pyproject's `package-dir`), so `src/domain/` is `python_worker.domain` and so on, and nothing
of ours lands at the top of site-packages beside other distributions' packages.
"""
