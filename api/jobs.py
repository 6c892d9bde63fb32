"""Jobs as the API sees them: submit (answer from cache, attach to an identical job in flight, or
store the images and enqueue), read status from the result backend, wait on the job's
announcement stream, delete everything a job left behind (even while it runs).

The API never calls ``AsyncResult.get()``: that subscribes to pub/sub and stalls under
threaded web workers. It reads the result key, and waits for a job on the job's own
announcement stream (:mod:`service.done`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import secrets
from collections.abc import Callable
from typing import Any

import redis
from celery import states

from aurum.schemas import ScoreOptions
from aurum import logs
from service import broker, done, heartbeats, keyspace, queue, routing
from service.cache import ResultCache, cache_key, identity_digest, routed_identity
from service.config import ServiceSettings
from service.contract import SCORE_BATCH, SCORE_IMAGE, TASKS, failure, time_limits
from service.images import ImageStore
from service.records import JobRecords

from .errors import DeadLetterExpired, JobNotFound, NotADeadLetter, ReplicationLag, ServiceUnavailable
from .observability import API_CACHE, REPLICATION_LAGS, REQUEUES, SUBMISSIONS

WAIT_SLICE = 0.5  # seconds; below the API's Redis socket timeout
STATUS = {states.PENDING: "queued", states.RECEIVED: "queued", states.RETRY: "queued",
          states.STARTED: "running", "PROGRESS": "running",
          states.SUCCESS: "succeeded", states.FAILURE: "failed", states.REVOKED: "failed"}


class Jobs:
    def __init__(self, client: redis.Redis, settings: ServiceSettings) -> None:
        self.redis = client
        self.settings = settings
        self.images = ImageStore(client, settings.sealer, ttl=settings.image_ttl)
        self.records = JobRecords(client, settings.sealer, settings.result_ttl)
        self.cache = (ResultCache(client, settings.sealer, settings.cache_ttl, settings.cache_l1_size, settings.cache_l1_ttl)
                      if settings.cache_ttl > 0 else None)
        self.backend = queue.app.backend
        self.router = routing.Router(client, settings.routing_refresh)
        self._replicas: tuple[float, int] = (-1.0, 0)  # when read, replicas connected to the primary
        self._identity: tuple[float, dict[str, Any] | None] = (-heartbeats.INTERVAL, None)

    def identity(self) -> dict[str, Any] | None:
        """The result identity the live worker children share (models, settings that change a
        result: service/cache.py), from their heartbeats, read again every heartbeat interval.
        None while no child is live or while they differ (a rolling upgrade): the API then makes
        no cache keys, and those jobs are neither answered from the cache nor cached. The API
        needs no models of its own."""
        read_at, identity = self._identity
        if time.monotonic() - read_at >= heartbeats.INTERVAL:
            try:
                found = {identity_digest(r["result"]): r["result"]
                         for r in heartbeats.live(self.redis).values() if r.get("result")}
            except redis.RedisError:
                found = {}
            identity = next(iter(found.values())) if len(found) == 1 else None
            self._identity = (time.monotonic(), identity)
        return identity

    # --- submit -------------------------------------------------------------------------------
    def submit(self, images: list[bytes], options: ScoreOptions, batch: bool, owner: str,
               rejected: dict[int, dict] | None = None, names: list[str | None] | None = None,
               validate: Callable[[], None] | None = None) -> tuple[str, dict[str, Any]]:
        """Accept a job: from cache, attached to an identical job in flight, or enqueued. Only
        then does the caller get its job id (and the job's record, to wait without reading it
        back). Cache entries and claims are scoped to the owner (see service/cache.py).
        ``validate``: the image checks, run unless the cache answers (those very bytes were
        checked and scored before)."""
        job_id, record = self._accept(images, options, batch, owner, rejected, names, validate)
        if self.settings.redis_wait_replicas:
            self._replicated(job_id)
        return job_id, record

    def _replicated(self, job_id: str) -> None:
        """Return once the replicas hold everything this job wrote, or raise ReplicationLag (503):
        a Sentinel failover then loses no job a client was told is accepted.

        WAIT counts the writes of the connection it is sent on, and the replication stream is
        ordered: one more write here (the record's TTL set again), after the broker's message,
        covers the images, the record and the message. It waits for every replica connected now
        (read once a second), and refuses below AURUM_REDIS_WAIT_REPLICAS: a Sentinel elects the
        replica whose offset it last saw highest, up to a second old, so a write only one of two
        replicas held could be on the one that is not elected (seen: 1 job of 1,398 in a chaos
        run waiting for one). With a replica gone, the one left is all there is to wait for."""
        n, timeout = self.settings.redis_wait_replicas, self.settings.redis_wait_timeout
        want = max(n, self._connected_replicas())
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.expire(keyspace.job(job_id), self.settings.result_ttl)
            pipe.execute_command("WAIT", want, timeout)
            acknowledged = pipe.execute()[-1]
        if acknowledged < n:
            REPLICATION_LAGS.inc()
            raise ReplicationLag()

    def _connected_replicas(self) -> int:
        read_at, count = self._replicas
        if time.monotonic() - read_at >= 1.0:
            try:
                count = int(self.redis.info("replication").get("connected_slaves", 0))
            except redis.RedisError:
                pass  # the WAIT that follows says what there is
            self._replicas = (time.monotonic(), count)
        return count

    def _accept(self, images: list[bytes], options: ScoreOptions, batch: bool, owner: str,
                rejected: dict[int, dict] | None, names: list[str | None] | None,
                validate: Callable[[], None] | None) -> tuple[str, dict[str, Any]]:
        job_id = secrets.token_hex(16)  # 128 random bits: not guessable
        options = options.resolve(self.settings)  # once: the workers and the cache key read these values
        record: dict[str, Any] = {"kind": "batch" if batch else "single", "total": len(images),
                                  "created_at": time.time(), "owner": owner, "images": []}
        if batch:  # items refused by the API's checks keep their place (and every item its filename)
            record["rejected"] = {str(i): doc for i, doc in (rejected or {}).items()}
            record["names"] = names or [None] * len(images)
            images = [data for i, data in enumerate(images) if i not in (rejected or {})]
        record["options"] = vars(options)  # to publish the job again if its message is lost
        digests = [hashlib.sha256(data).hexdigest() for data in images]
        # the model versions that serve it (service/routing.py); a batch sticks to its first image
        record["route"] = self.router.decide(job_id, owner, digests[0] if digests else "")
        identity = self.identity() if self.cache is not None else None
        if identity is not None:  # a DELETE evicts every entry the job makes
            identity = routed_identity(identity, record["route"])
            record["identity"] = identity_digest(identity)
            record["cache_keys"] = [cache_key(digest, identity, options, scope=owner) for digest in digests]
        key = record["cache_keys"][0] if not batch and "cache_keys" in record else None
        if key is not None:
            hit = self.cache.answer(key, lambda doc: self.records.sealed(job_id, {**record, "cached": doc}))
            API_CACHE.labels("miss" if hit is None else "hit").inc()
            if hit is not None:  # answered: its record (with the result) is stored
                record["cached"] = hit
                SUBMISSIONS.labels("single", "cached").inc()
                return job_id, record
        if validate is not None:
            validate()
        if key is not None:
            leader = self.cache.claim(key, job_id, self.settings.task_time_limit * 2)
            if leader is not None:
                # The same owner, image and options are being scored now: follow that job. The
                # follower keeps its own image, to run alone if the leader is deleted or cancelled.
                record["follows"] = leader
        try:
            # images, record and message: one round trip when the broker is this Redis
            published = "follows" in record
            with self.redis.pipeline(transaction=False) as pipe:
                for data in images:
                    record["images"].append(self.images.put(data, pipe))
                self.records.save(job_id, record, pipe)
                if not published:  # work arriving, for the autoscaler (workers/autoscale.py)
                    second = keyspace.arrivals(int(time.time()))
                    pipe.incrby(second, len(images)).expire(second, 120)
                    if queue.shares_redis(self.settings):
                        with broker.into(pipe):
                            self._publish(job_id, record)
                        published = True
                pipe.execute()
            if not published:
                self._publish(job_id, record)
        except Exception:
            self._cleanup(job_id, record)
            raise
        SUBMISSIONS.labels(record["kind"], "coalesced" if "follows" in record else "queued").inc()
        return job_id, record

    def _publish(self, job_id: str, record: dict[str, Any]) -> None:
        headers = {"aurum_submitted_at": time.time(), "aurum_request_id": logs.request_id.get(),
                   "aurum_identity": record.get("identity"), "aurum_route": record.get("route")}
        # The cache keys this API made (scoped to the owner); none ("" / []) when it made none
        # (cache off, or no identity shared by live workers): the worker then caches nothing,
        # rather than unscoped.
        keys = record.get("cache_keys") or [""] * len(record["images"])
        if record["kind"] == "batch":
            queue.publish(SCORE_BATCH, (record["images"], record["options"], keys), job_id, headers,
                          time_limits(self.settings, len(record["images"])))
        else:
            queue.publish(SCORE_IMAGE, (record["images"][0], record["options"], keys[0]), job_id, headers)

    def _maybe_requeue(self, job_id: str, state: str, record: dict[str, Any] | None = None) -> None:
        """Publish a job again when it has waited, never started, longer than AURUM_REQUEUE_AFTER.

        Redis's transport pops a message (BRPOP) before it records it as unacknowledged: a
        Redis crash between the two loses the message although the job was accepted (seen in
        tests/chaos/test_redis_outage.py). Reading the job's status repairs that. A job that is
        merely waiting in a deep queue may run twice; results are idempotent.

        A job still ``running`` after AURUM_REQUEUE_AFTER plus the hard time limit is published
        again too: its worker lost Redis while storing the outcome, and Celery acknowledged the
        message anyway. No run lasts that long (one that waited longer than AURUM_REQUEUE_AFTER
        was published again while still queued)."""
        if state not in (states.PENDING, states.STARTED):
            return
        limit = self.settings.requeue_after + (self.settings.task_time_limit if state == states.STARTED else 0)

        def due(record: dict[str, Any] | None) -> bool:
            if record is None or "cached" in record or "follows" in record or not record.get("images"):
                return False
            waited = time.time() - record.get("queued_at", record["created_at"])
            return waited >= limit and record.get("requeues", 0) < 3

        # The caller's copy decides the usual case (not due) without a read; a due job is read
        # afresh, as another API process may have published it again since that copy was read.
        if record is None:
            record = self.records.load(job_id)
        elif due(record):
            record = self.records.load(job_id)
        if not due(record):
            return
        if not self.redis.set(keyspace.requeue(job_id), 1, nx=True, ex=max(1, self.settings.requeue_after)):
            return  # another API process is doing it
        record["requeues"] = record.get("requeues", 0) + 1
        record["queued_at"] = time.time()
        self.records.save(job_id, record, keep_ttl=True)
        REQUEUES.inc()
        self._publish(job_id, record)

    def _promote(self, job_id: str, record: dict[str, Any]) -> None:
        """A follower whose leader will give it nothing (deleted, cancelled, or never published
        because its submission failed) runs as a job of its own, on its own copy of the image."""
        leader = record.pop("follows")
        if not self.redis.set(keyspace.requeue(job_id), 1, nx=True, ex=max(1, self.settings.requeue_after)):
            return  # another API process is doing it
        if self.cache is not None:
            self.cache.take_over(record.get("cache_keys", []), leader, job_id, self.settings.task_time_limit * 2)
        record["queued_at"] = time.time()
        self.records.save(job_id, record, keep_ttl=True)
        self._publish(job_id, record)

    def _still_leads(self, record: dict[str, Any], leader: str) -> bool:
        """Whether ``leader`` still holds the in-flight claim a follower's key points to. A leader
        queued but whose record is not stored yet (its submission's round trip under way) does;
        one whose submission failed, or that was deleted, released it: promote the follower."""
        keys = record.get("cache_keys") or []
        return bool(keys) and self.cache is not None and self.cache.leader(keys[0]) == leader

    def _cleanup(self, job_id: str, record: dict[str, Any]) -> None:
        """Undo a submission that failed: its images, record and claim."""
        try:
            self.images.delete(*record["images"])
            self.redis.delete(keyspace.job(job_id))
            if self.cache is not None:
                self.cache.release(record.get("cache_keys", []), job_id)
        except redis.RedisError:
            pass  # the keys expire with their TTL

    # --- read ---------------------------------------------------------------------------------
    def record(self, job_id: str, owner: str) -> dict[str, Any]:
        """The job's record; another key's job is 404 too, so that ids leak nothing."""
        record = self.records.load(job_id) if _valid_id(job_id) else None
        if record is None or not hmac.compare_digest(record["owner"], owner):
            raise JobNotFound()
        return record

    def status(self, job_id: str, owner: str) -> dict[str, Any]:
        return self._status(job_id, self.record(job_id, owner))

    def metadata(self, job_id: str) -> dict[str, Any]:
        """Any tenant's job, for an admin: what it is and where it stands, never its images or
        what was computed from them (the result)."""
        record = self.records.load(job_id) if _valid_id(job_id) else None
        if record is None:
            raise JobNotFound()
        doc = {k: v for k, v in self._status(job_id, record).items() if k in METADATA}
        if "error" in doc:
            doc["error"] = {"code": doc["error"]["code"]}
        return {**doc, "owner": record["owner"][:16], "images": record["total"],
                "images_stored": len(record.get("images", []))}

    def _status(self, job_id: str, record: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = {"job_id": job_id, "kind": record["kind"], "created_at": record["created_at"]}
        if "cached" in record:
            return {**doc, **_outcome(record["cached"], cached=True)}
        effective = record.get("follows", job_id)  # a coalesced job follows the one computing it
        meta = self.backend.get_task_meta(effective)
        state = meta["status"]
        if effective != job_id:
            if state == states.REVOKED or (state == states.PENDING and not self.records.exists(effective)
                                           and not self._still_leads(record, effective)):
                self._promote(job_id, record)
                effective, meta = job_id, self.backend.get_task_meta(job_id)
                state = meta["status"]
            elif state in states.READY_STATES and record["images"]:
                self.images.delete(*record["images"])  # the leader's outcome is this job's: its copy goes
                record["images"] = []
                self.records.save(job_id, record, keep_ttl=True)
        self._maybe_requeue(effective, state, record if effective == job_id else None)
        doc["status"] = STATUS.get(state, "queued")
        if record["kind"] == "batch":
            done = record["total"] if state == states.SUCCESS else len(record.get("rejected", {}))
            if state == "PROGRESS" and isinstance(meta.get("result"), dict):
                done += meta["result"].get("done", 0)
            doc["progress"] = {"done": done, "total": record["total"]}
        if state == states.SUCCESS:
            result = meta["result"]
            if record["kind"] == "batch" and isinstance(result, dict) and "items" in result:
                result = _merged(record, result)
            doc.update(_outcome(result, cached=effective != job_id))
        elif state in (states.FAILURE, states.REVOKED):
            doc["error"] = failure(meta.get("result"))["error"]
        return doc

    def wait(self, job_id: str, owner: str, timeout: float, record: dict[str, Any] | None = None) -> dict[str, Any]:
        """The job's status once it has ended, or when ``timeout`` runs out. Blocks on the job's
        announcement stream (service/done.py) rather than polling; in slices of at most
        ``WAIT_SLICE`` so that a lost announcement (Redis restarted) costs at most one slice."""
        deadline = time.monotonic() + timeout
        # A job this request has just queued is not read first: its announcement, made or to
        # come, is on its stream (one round trip of three saved per ?wait= job).
        just_queued = record is not None and not {"cached", "follows"} & record.keys()
        record = record or self.record(job_id, owner)  # a cache hit is answered without Redis
        seen, watched = "0", None
        while True:
            if not just_queued:
                doc = self._status(job_id, record)
                if doc["status"] in ("succeeded", "failed") or deadline - time.monotonic() <= 0:
                    return doc
            just_queued = False
            effective = record.get("follows", job_id)  # a promoted follower waits on itself
            if effective != watched:
                seen, watched = "0", effective
            left = deadline - time.monotonic()
            seen = done.wait(self.redis, effective, seen, min(left, WAIT_SLICE))

    def requeue(self, job_id: str) -> dict[str, Any]:
        """Run a dead letter again (an operator's call, once the cause is fixed): its delivery
        counters and stored failure are cleared and its message published again, with the
        images it kept. Its owner sees it queued again; a poison image that still kills its
        worker is set aside again after as many deliveries."""
        record = self.records.load(job_id) if _valid_id(job_id) else None
        if record is None:
            raise JobNotFound()
        if self.redis.lpos(keyspace.DEAD_LETTERS, job_id) is None:  # one lookup, not the whole list
            raise NotADeadLetter()
        images = record.get("images", [])
        if not images or self.redis.exists(*images) != len(images):
            raise DeadLetterExpired()
        record["queued_at"] = time.time()  # a status read must not take it for a lost message
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(keyspace.deliveries(name, job_id) for name in TASKS))
            pipe.lrem(keyspace.DEAD_LETTERS, 0, job_id)
            self.records.save(job_id, record, pipe, keep_ttl=True)
            pipe.execute()
        self.backend.forget(job_id)
        self._publish(job_id, record)
        return {"job_id": job_id, "status": "queued", "images": len(images)}

    # --- delete -------------------------------------------------------------------------------
    def delete(self, job_id: str, owner: str) -> None:
        """Remove everything of a job: record, images, result, cache entries, claims, job-ended
        stream and counters. A tombstone (kept for the result TTL) makes a worker that meets
        the job drop it, and one that is running it remove what it stores afterwards."""
        record = self.record(job_id, owner)
        cache_keys = record.get("cache_keys", [])
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keyspace.deleted(job_id), 1, ex=self.settings.result_ttl)  # first: see workers/tasks.py
            pipe.delete(*keyspace.of_job(job_id), *record["images"])
            if self.cache is not None:
                self.cache.release(cache_keys, job_id, pipe)
            pipe.execute()
        self.backend.forget(job_id)
        if self.cache is not None and cache_keys:
            self.cache.evict(*cache_keys)

    # --- health -------------------------------------------------------------------------------
    def ping_redis(self) -> None:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise ServiceUnavailable(f"Redis is unreachable: {type(exc).__name__}.") from exc


def _merged(record: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A batch's items in the order they were sent: the API's rejections in their places, the
    worker's results in the others, each with its filename."""
    rejected = record.get("rejected", {})
    scored = iter(result["items"])
    names = record.get("names") or [None] * record["total"]
    items = []
    for i in range(record["total"]):
        item = dict(rejected[str(i)]) if str(i) in rejected else dict(next(scored))
        if names[i]:
            item["filename"] = names[i]
        items.append(item)
    return {**result, "total": record["total"], "done": record["total"], "items": items}


def _outcome(doc: Any, cached: bool) -> dict[str, Any]:
    """A finished job's status fields from a result or a cached ``{"error": ...}`` document."""
    if isinstance(doc, dict) and "error" in doc and "faces" not in doc and "items" not in doc:
        return {"status": "failed", "error": doc["error"]}
    if isinstance(doc, dict) and "faces" in doc:
        doc = {**doc, "cached": cached or doc.get("cached", False)}
    return {"status": "succeeded", "result": doc}


METADATA = ("job_id", "kind", "created_at", "status", "progress", "error", "cached")


def _valid_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)
