"""The job service between the API and the workers: the Redis keyspace (:mod:`.keyspace`), the
image store, the result cache with in-flight coalescing, and job-ended announcements. Neither
Flask nor Celery is needed to read it; ``api/`` and ``workers/`` both import from here, and the
core (``aurum/``) imports nothing from it."""
