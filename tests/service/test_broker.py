"""The broker and result-backend plumbing the per-job overhead depends on (service/broker.py,
celeryconfig.py): kombu's Redis channel reuses one client per pool, messages still go through,
and one result backend serves every thread of a process."""

from __future__ import annotations

import threading

import pytest
from kombu import Connection, Exchange, Queue

from service.broker import transport_for


def test_transport_chosen_by_scheme() -> None:
    assert transport_for("redis://127.0.0.1:6379/0") == "service.broker:Transport"
    assert transport_for("rediss://h:6380/0") == "service.broker:Transport"
    assert transport_for("sentinel://a:26379/0;sentinel://b:26379/0") == "service.broker:SentinelTransport"
    assert transport_for("amqp://guest@localhost//") is None  # another broker keeps its own transport


def test_the_app_publishes_through_it(celery_app) -> None:
    with celery_app.connection_for_write() as conn:
        assert type(conn.transport).__module__ == "service.broker"


def test_one_client_per_pool_and_messages_go_through(redis_server) -> None:
    url = f"{redis_server.url}/5"
    queue = Queue("broker-test", Exchange("broker-test", type="direct"), routing_key="broker-test")
    with Connection(url, transport=transport_for(url)) as conn:
        channel = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first  # not a new redis.Redis per command
        producer = conn.Producer(serializer="json")
        for i in range(3):
            producer.publish({"n": i}, exchange=queue.exchange, routing_key="broker-test", declare=[queue])
        got = []
        with conn.Consumer(queue, callbacks=[lambda body, message: (got.append(body["n"]), message.ack())],
                           accept=["json"]):
            while len(got) < 3:
                conn.drain_events(timeout=10)
        assert got == [0, 1, 2]
        # kombu drops its pools after a connection error: the client follows the new pool
        channel._disconnect_pools()
        second = channel._create_client()
        assert second is not first and second.connection_pool is channel.pool
        assert second.ping()
        assert channel._create_client(asynchronous=True) is not second  # the consumer's own pool


def test_one_result_backend_per_process() -> None:
    """Celery's default is a backend (and Redis pool) per thread, i.e. per gevent greenlet: a
    new one, with a new connection, for every API request. The project's configuration makes
    one per process (the tests' own app, beside in-process workers, keeps one per thread)."""
    from celery import Celery

    app = Celery("aurum-broker-test")
    app.config_from_object("celeryconfig")
    shared = app.backend  # made once, as the API does at start (api/jobs.py)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(app.backend)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 3 and all(b is shared for b in seen)


def test_a_success_is_stored_without_reading_first_and_never_overwritten_by_another_state(celery_app) -> None:
    """service/backend.py: Celery reads a job's stored state before every store so that nothing
    overwrites a SUCCESS; a SUCCESS is stored without that read (a round trip and an unseal per
    job), and a later FAILURE or STARTED still leaves a stored SUCCESS alone."""
    import secrets

    from celery import states

    backend = celery_app.backend
    job_id = secrets.token_hex(16)
    reads = []
    original = backend._get_task_meta_for
    backend._get_task_meta_for = lambda task_id: (reads.append(task_id), original(task_id))[1]
    try:
        backend.store_result(job_id, None, states.STARTED)
        assert reads == [job_id]  # Celery's check, kept for every state but SUCCESS
        backend.store_result(job_id, {"n": 1}, states.SUCCESS)
        backend.store_result(job_id, {"n": 2}, states.SUCCESS)  # a rerun's identical outcome may overwrite
        assert reads == [job_id]
        backend.store_result(job_id, ValueError("late"), states.FAILURE)
        backend.store_result(job_id, None, states.STARTED)
    finally:
        del backend._get_task_meta_for
    meta = backend.get_task_meta(job_id)
    assert meta["status"] == states.SUCCESS and meta["result"] == {"n": 2}
    backend.forget(job_id)


def test_a_publish_joins_the_callers_pipeline(redis_server) -> None:
    """service/broker.into: a message published inside it is queued on the caller's pipeline, sent
    with the caller's own writes when it executes (a submission's one round trip), and not at
    all when it is discarded; outside it, publishing is kombu's own."""
    import redis

    from service.broker import into

    url = f"{redis_server.url}/5"
    client = redis.Redis.from_url(url)
    queue = Queue("into-test", Exchange("into-test", type="direct"), routing_key="into-test")
    with Connection(url, transport=transport_for(url)) as conn:
        producer = conn.Producer(serializer="json")
        producer.publish({"n": 0}, exchange=queue.exchange, routing_key="into-test", declare=[queue])
        assert client.llen("into-test") == 1
        with client.pipeline(transaction=False) as pipe:
            pipe.set("into-test:record", "r")
            with into(pipe):
                producer.publish({"n": 1}, exchange=queue.exchange, routing_key="into-test", declare=[queue])
            assert client.llen("into-test") == 1 and not client.exists("into-test:record")  # nothing sent yet
            pipe.execute()
        assert client.llen("into-test") == 2 and client.get("into-test:record") == b"r"
        with client.pipeline(transaction=False) as pipe:
            with into(pipe):
                producer.publish({"n": 2}, exchange=queue.exchange, routing_key="into-test", declare=[queue])
            pipe.reset()  # a submission that failed before its round trip: no message either
        producer.publish({"n": 3}, exchange=queue.exchange, routing_key="into-test", declare=[queue])
        got = []
        with conn.Consumer(queue, callbacks=[lambda body, message: (got.append(body["n"]), message.ack())],
                           accept=["json"]):
            while len(got) < 3:
                conn.drain_events(timeout=10)
        assert got == [0, 1, 3]
    client.delete("into-test:record")


def test_the_api_publishes_in_its_pipeline_only_onto_its_own_redis(celery_app) -> None:
    from service import queue
    from service.config import ServiceSettings

    settings = ServiceSettings.from_env(redis_url=celery_app.conf.broker_url)
    assert queue.shares_redis(settings)
    other = celery_app.conf.broker_url.rsplit("/", 1)[0] + "/7"  # another database
    assert not queue.shares_redis(ServiceSettings.from_env(redis_url=other))


def test_acks_fetches_and_requeues_go_on_while_redis_is_full(tmp_path) -> None:
    """service/broker.QoS: with Redis full (maxmemory, noeviction) kombu's own acknowledgement
    (a MULTI) and its record of a fetched message (ZADD, HSET) are refused, and the consumer
    restarted on each. Here an ack deletes its record, a message fetched then runs (in memory
    only), and a refused requeue leaves it in Redis for the visibility timeout; none raises."""
    import redis

    from tests.helpers.redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    try:
        url = server.url_for(0)
        client = redis.Redis.from_url(url)
        queue = Queue("full-test", Exchange("full-test", type="direct"), routing_key="full-test")
        with Connection(url, transport=transport_for(url)) as conn:
            producer = conn.Producer(serializer="json")
            for i in range(3):
                producer.publish({"n": i}, exchange=queue.exchange, routing_key="full-test", declare=[queue])
            got = []
            with conn.Consumer(queue, callbacks=[lambda body, message: got.append((body["n"], message))],
                               accept=["json"], prefetch_count=1):
                conn.drain_events(timeout=10)  # prefetch 1: one message at a time
                assert [n for n, _ in got] == [0] and client.hlen("unacked") == 1
                client.config_set("maxmemory", 1)
                try:
                    with pytest.raises(redis.exceptions.OutOfMemoryError):
                        client.set("full-test:probe", b"x")  # Redis is full indeed
                    got[0][1].ack()  # kombu's MULTI is refused; the deletes are not
                    assert client.hlen("unacked") == 0 and client.zcard("unacked_index") == 0
                    conn.drain_events(timeout=10)  # popped while full: not recorded, but delivered
                    assert [n for n, _ in got] == [0, 1] and client.hlen("unacked") == 0
                    got[1][1].reject(requeue=True)  # Redis refuses the LPUSH: left as it is
                    conn.drain_events(timeout=10)  # and the consumer holds no slot for it
                    assert [n for n, _ in got] == [0, 1, 2]
                finally:
                    client.config_set("maxmemory", 0)
                got[2][1].ack()
        assert client.llen("full-test") == 0
    finally:
        server.stop()
