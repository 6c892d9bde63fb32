"""JWT bearer tokens (RS256 and ES256 against a JWKS the test makes), roles on API keys and
tokens, 401 against 403, the admin API, and the roles in the OpenAPI document."""

from __future__ import annotations

import json
import secrets
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.config import ServiceSettings

from tests.helpers.api import keyed_client, upload
from tests.helpers.photos import photo_bytes

ISSUER, AUDIENCE = "https://login.example.com", "aurum"


@pytest.fixture(scope="module")
def signing_keys(tmp_path_factory):
    """Two signing keys (RS256 and ES256) in a JWKS file, and one the JWKS does not hold."""
    keys = {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "stranger": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
    jwks = {"keys": [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys["rsa"].public_key())), "kid": "rsa-1", "use": "sig",
         "alg": "RS256"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys["ec"].public_key())), "kid": "ec-1", "use": "sig",
         "alg": "ES256"}]}
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps(jwks))
    return keys, path


@pytest.fixture(scope="module")
def app(worker, signing_keys):
    from api import create_app

    _, path = signing_keys
    return create_app(ServiceSettings.from_env(rate_limit="100000/minute", jwt_jwks=str(path), jwt_issuer=ISSUER,
                                               jwt_audience=AUDIENCE, jwt_leeway=30))


def token(signing_keys, sub: str = "alice", roles=("client",), key: str = "rsa", kid: str | None = None,
          **claims) -> str:
    keys, _ = signing_keys
    now = int(time.time())
    body = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "roles": list(roles), **claims}
    alg = "ES256" if key == "ec" else "RS256"
    return jwt.encode(body, keys[key], algorithm=alg,
                      headers={"kid": kid or {"rsa": "rsa-1", "ec": "ec-1", "stranger": "rsa-1"}[key]})


def bearer(app, value: str):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {value}"
    return client


def code(response) -> tuple[int, str]:
    return response.status_code, response.get_json()["error"]["code"]


def test_tokens_of_either_algorithm_score_and_each_tenant_sees_only_its_own(app, signing_keys) -> None:
    alice = bearer(app, token(signing_keys, sub="alice"))
    response = upload(alice, photo_bytes("astronaut.png"), wait="20")
    assert response.status_code == 200 and len(response.get_json()["result"]["faces"]) == 1
    job = response.get_json()["job_id"]
    assert bearer(app, token(signing_keys, sub="alice", key="ec")).get(f"/api/ml/jobs/{job}").status_code == 200
    assert code(bearer(app, token(signing_keys, sub="bob")).get(f"/api/ml/jobs/{job}")) == (404, "JOB_NOT_FOUND")
    # the same sub from another issuer would be another tenant: the tenant id includes the issuer
    assert code(bearer(app, token(signing_keys, sub="alice", iss="https://evil.example.com"))
                .get(f"/api/ml/jobs/{job}"))[0] == 401


def test_bad_tokens_are_401_with_their_reason(app, signing_keys) -> None:
    now = int(time.time())
    expired = token(signing_keys, exp=now - 120, iat=now - 600)
    assert code(bearer(app, expired).get("/api/ml/models")) == (401, "TOKEN_EXPIRED")
    within_skew = token(signing_keys, exp=now - 5, iat=now - 600)  # 5 s past, 30 s of leeway
    assert bearer(app, within_skew).get("/api/ml/models").status_code == 200
    keys, _ = signing_keys
    cases = {
        "signed by a key not in the JWKS": token(signing_keys, key="stranger"),
        "unknown kid": token(signing_keys, kid="rsa-9"),
        "wrong audience": token(signing_keys, aud="another-service"),
        "wrong issuer": token(signing_keys, iss="https://other.example.com"),
        "no exp": jwt.encode({"sub": "a", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "roles": ["client"]},
                             keys["rsa"], algorithm="RS256", headers={"kid": "rsa-1"}),
        "alg none": jwt.encode({"sub": "a", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60,
                                "roles": ["admin"]}, None, algorithm="none", headers={"kid": "rsa-1"}),
        "not a JWT": "a.b.c",
    }
    for name, value in cases.items():
        status, err = code(bearer(app, value).get("/api/ml/models"))
        assert (status, err) == (401, "INVALID_TOKEN"), name
    # HS256 "signed" with the public key as the secret (the classic confusion attack)
    from cryptography.hazmat.primitives import serialization

    public = keys["rsa"].public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    # PyJWT refuses to sign HS256 with a PEM key: the forgery is made by hand
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps({"sub": "a", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60,
                           "roles": ["admin"]}).encode())
    forged = f"{head}.{body}.{b64(hmac.new(public, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"
    assert code(bearer(app, forged).get("/api/admin/keys")) == (401, "INVALID_TOKEN")
    assert code(app.test_client().get("/api/admin/keys")) == (401, "UNAUTHENTICATED")


def test_client_credentials_are_403_on_admin_endpoints(app, signing_keys) -> None:
    client_key = keyed_client(app, f"client-{secrets.token_hex(4)}")
    client_token = bearer(app, token(signing_keys, roles=["client"]))
    no_role = bearer(app, token(signing_keys, roles=["viewer"]))
    for client in (client_key, client_token):
        for method, path in (("get", "/api/admin/keys"), ("post", "/api/admin/keys"), ("delete", "/api/admin/cache"),
                             ("get", "/api/admin/dead-letters"), ("get", "/api/admin/models"),
                             ("get", "/api/admin/jobs/" + "0" * 32), ("delete", "/api/admin/keys/x"),
                             ("post", "/api/admin/dead-letters/" + "0" * 32 + "/requeue")):
            assert code(getattr(client, method)(path)) == (403, "FORBIDDEN"), (method, path)
    assert code(no_role.get("/api/ml/models")) == (403, "FORBIDDEN")  # valid, but no role we know
    assert client_token.get("/api/ml/models").status_code == 200


def test_the_admin_api_does_what_the_cli_and_redis_did(app, signing_keys) -> None:
    admin = bearer(app, token(signing_keys, sub="operator", roles=["admin"]))
    name = f"made-by-admin-{secrets.token_hex(4)}"
    created = admin.post("/api/admin/keys", json={"name": name, "rate": "100/minute"})
    assert created.status_code == 201
    new_token = created.get_json()["token"]
    assert created.get_json()["key"]["role"] == "client" and new_token.startswith("ak_")
    made = app.test_client()
    made.environ_base["HTTP_X_API_KEY"] = new_token
    job = upload(made, photo_bytes("astronaut.png"), wait="20").get_json()["job_id"]
    listed = admin.get("/api/admin/keys").get_json()
    assert any(k["name"] == name and not k["revoked"] for k in listed)
    assert new_token not in json.dumps(listed)  # never the key itself
    # any tenant's job metadata, never its images or result
    meta = admin.get(f"/api/admin/jobs/{job}").get_json()
    assert meta["status"] == "succeeded" and meta["images"] == 1 and meta["owner"]
    assert "result" not in meta and "faces" not in json.dumps(meta)
    assert code(admin.get("/api/admin/jobs/" + "f" * 32)) == (404, "JOB_NOT_FOUND")
    # re-queue: only a dead letter, only while it has its images (tests/chaos/test_faults.py re-runs a real one)
    assert code(admin.post(f"/api/admin/dead-letters/{job}/requeue")) == (409, "NOT_A_DEAD_LETTER")
    assert code(admin.post("/api/admin/dead-letters/" + "f" * 32 + "/requeue")) == (404, "JOB_NOT_FOUND")
    from service.keyspace import DEAD_LETTERS

    redis_client = app.extensions["aurum.jobs"].redis
    redis_client.lpush(DEAD_LETTERS, job)  # as if set aside: its image went with its success
    try:
        assert code(admin.post(f"/api/admin/dead-letters/{job}/requeue")) == (410, "DEAD_LETTER_EXPIRED")
    finally:
        redis_client.lrem(DEAD_LETTERS, 0, job)
    assert isinstance(admin.get("/api/admin/dead-letters").get_json(), list)
    assert isinstance(admin.get("/api/admin/models").get_json(), list)
    assert admin.delete("/api/admin/cache").get_json()["removed"] >= 0
    assert code(admin.post("/api/admin/keys", json={"name": "x", "role": "root"})) == (400, "INVALID_OPTION")
    assert code(admin.post("/api/admin/keys", json={"name": "y", "rate": "lots"})) == (400, "INVALID_INPUT")
    revoked = admin.delete(f"/api/admin/keys/{name}")
    assert revoked.status_code == 200 and revoked.get_json()[0]["revoked"] is True
    assert code(made.get(f"/api/ml/jobs/{job}")) == (401, "INVALID_API_KEY")
    assert code(admin.delete(f"/api/admin/keys/{name}")) == (404, "KEY_NOT_FOUND")
    # an admin API key works as an admin token does
    admin_key = keyed_client(app, f"admin-{secrets.token_hex(4)}", role="admin")
    assert admin_key.get("/api/admin/keys").status_code == 200
    assert admin_key.get("/api/ml/models").status_code == 200  # and may do what a client may


def test_openapi_names_each_endpoints_role(app) -> None:
    spec = app.test_client().get("/openapi.json").get_json()
    assert {"ApiKey", "Bearer"} <= set(spec["components"]["securitySchemes"])
    seen = set()
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue  # path-level parameters
            if path.startswith("/api/admin/"):
                assert op["x-required-role"] == "admin" and "403" in op["responses"], (method, path)
            elif path.startswith("/api/"):
                assert op["x-required-role"] == "client" and "401" in op["responses"], (method, path)
            else:
                assert op["security"] == [] and "x-required-role" not in op, (method, path)
            seen.add(op.get("x-required-role"))
    assert seen == {"admin", "client", None}


def test_without_a_jwks_a_jwt_is_refused_and_half_a_configuration_does_not_start(worker, signing_keys) -> None:
    from api import create_app

    plain = create_app(ServiceSettings.from_env())
    assert code(bearer(plain, token(signing_keys)).get("/api/ml/models")) == (401, "INVALID_TOKEN")
    _, path = signing_keys
    with pytest.raises(ValueError, match="AURUM_JWT_ISSUER"):
        ServiceSettings.from_env(jwt_jwks=str(path))
