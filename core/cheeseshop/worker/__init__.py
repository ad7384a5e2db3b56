"""The worker side: Celery delivers outbox events and runs periodic tasks.

Used when ``broker_url`` is set (otherwise the web process does this work itself, see
:mod:`cheeseshop.outbox.embedded`). The pieces:

- :mod:`.broker`: the broker URL and transport options from settings (pure).
- :mod:`.celery_app`: the Celery application and its two tasks, ``deliver`` and
  ``periodic``.
- :mod:`.runtime`: what a worker process runs tasks with (services, an event loop).
- :mod:`.locks`: a renewed Redis lock, so a periodic job never runs twice at once.
- :mod:`.dispatcher`: :class:`~.dispatcher.CeleryDispatcher`, queuing ``deliver`` tasks
  from the web process.
- :mod:`.plugin`: the default plugin ``celery`` that selects it, and the core's periodic
  tasks (the outbox sweep, the collection of orphaned files).
- :mod:`.commands`: ``cheeseshop worker`` and ``cheeseshop beat``.

Nothing in this package imports Celery at import time except ``celery_app`` and what
needs it, so the embedded mode never pays for it.
"""
