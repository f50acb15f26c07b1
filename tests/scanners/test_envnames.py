"""The variable-name heuristic's example table: secret-named random values found, everything that
fills real environments (paths, colours, sockets, digests, references, counters) not.

Every example runs twice: through ``judge`` (the heuristic alone) and through ``scan_variables``
(engine plus heuristic), so a negative here is a variable nothing in depthguard reports. All values
are synthetic.
"""

from __future__ import annotations

import pytest

from scanners.engine import Engine
from scanners.envnames import RULE_ID, is_secret_name, judge, name_segments
from scanners.sources.env import scan_variables

AWS_LIKE = "hwKZG6q1uz7Nges5hg3yI0yu851M0nTg58JjAUJT"
BASE64_SLASH = "GO0wt3/bqFGbuvYSTjm/7geqiBfQajj9NwZ5IDin"
HEX64 = "e29826f45b2d3290f217b0c1c1651894da58e07eb30e90059eba82681e59e065"
SHA1 = "4f7523259a0003ab98175bd257ec55e43e9371a3"

POSITIVES: list[tuple[str, str]] = [
    ("DB_PASSWORD", "ut8pdq%sxRpvE~D5"),
    ("POSTGRES_PASSWORD", "d6rvau5kHvRwMzzuVtYk"),
    ("MYSQL_ROOT_PASSWORD", "S.!I4k9GvvK9JkmW378D"),
    ("PGPASSWORD", "FogNCAI3Ao3pxTnHyf6t5YdI"),
    ("REDIS_PASS", "38AibNyyurlGFb0E"),
    ("RABBITMQ_DEFAULT_PASS", "Bm2bd.2AG2!B2TFu2%a%Wo!C"),
    ("SMTP_PWD", "DxQshIISj3bb5642ldGDinouxZju"),
    ("DB_PW", "nA66cKIFTmxrrjtjVmd4xI0z.vy_"),
    ("LDAP_BIND_PASSWD", "KCzi2Eg3h0p54qGzTYdXt5yN84Bl3WWW"),
    ("KEYSTORE_PASSPHRASE", "Gqc#fQ7.ZvqsP3CCT#nK*EBJMhw5k62r"),
    ("APP_SECRET", "jT5Kq8Xm2Lw9Vr4Pn7Hc3Bd6zQ"),
    ("OAUTH_CLIENT_SECRET", "vR7qL2xW9kT4mZ8pN3cJ6hB1"),
    ("JWT_SECRET_KEY", HEX64),
    ("SECRET_KEY_BASE", "670e8f889384cfe3104cd5dc6a2a734378f56c87f247b30ee0f2b893ed60be71"),
    ("COOKIE_SECRET", "Qw8zLp3Nx7Rk2Vm9Tb4Hc6Jd"),
    ("CI_DEPLOY_TOKEN", "pK4wX9qL2mR7tZ3vN8bC5hJ1"),
    ("authToken", "Lm9Qx2Vr7Kp4Wz8Nt3Bc6Hy"),
    ("SLACK_BOT_ACCESSTOKEN", "Zt5Kq8Xm2Lw9Vr4Pn7Hc3Bd"),
    ("API_KEY", "Nx3Kq7Vm2Lp9Wr4Zt8Bc6Hd"),
    ("MAPS_APIKEY", "Hc6Jd2Fg8Kq3Lm7Vx4Wp9Rt"),
    ("apiKey", "Tb4Hc6Jd9Qw8zLp3Nx7Rk2V"),
    ("AWS_SECRET_ACCESS_KEY", AWS_LIKE),
    ("STORAGE_ACCESS_KEY", "Rk2Vm9Tb4Hc6Jd8Qw3zLp7N"),
    ("JWT_PRIVATE_KEY", "MC4CAQAwBQYDK2VwBCIEIBq7Lm2Vz9Kp4Wr7Nt3Yb6"),
    ("ENCRYPTION_KEY", SHA1),
    ("WEBHOOK_SIGNING_KEY", "whk_4Wr7Nt3Yb6Hc5Jd2FgXq8L"),
    ("HMAC_KEY", "Vz9Kp4Wr7Nt3Yb6Hc5Jd2Fg"),
    ("SERVICE_CREDENTIALS", "c3ZjOlE4a1cyelg5TG0zVnI3"),
    ("GOOGLE_CREDENTIAL", "Yb6Hc5Jd2FgXq8Lm2Vz9Kp4W"),
    ("REGISTRY_AUTH", "Wr7Nt3Yb6Hc5Jd2FgXq8Lm2V"),
    ("NPM_CONFIG__AUTH", "bnBtOkt4OXFMMm1SN3RaM3Zu"),
    ("SENTRY_DSN", "https://pub:Kq8Xm2Lw9Vr4Pn7H@sentry.internal/4"),
    ("adminPassword", "Jd9Qw8zLp3Nx7Rk2VTb4Hc6"),
    ("BEARER", "Fg8Kq3Lm7Vx4Wp9RtHc6Jd2"),
    # names no rule of the pack covers: only the heuristic reports these
    ("SESSION_KEY", "Qx7Lm2Vz9Kp4Wr7Nt3Yb6Hc5"),
    ("DEPLOY_KEY", "Zk3Vm7Lp2Wr9Nt4Yb6Hc1Xq8"),
    ("ADMIN_AUTH", "Hb4Nc6Jd9Qw8zLp3Nx7Rk2V"),
    ("ANALYTICS_WRITE_KEY", "Pn7Hc3Bd5Kq8Xm2Lw9Vr4Zt"),
    ("MINIO_SECRET_KEY", BASE64_SLASH),
    ("MINIO_ROOT_PASSWORD", "/Kq8Xm2Lw9Vr4Pn7H3bQzT5"),  # base64 starting with "/" is not a path
]

# (name, value, expected reason): the reason pins down *why* each one is not reported.
NEGATIVES: list[tuple[str, str, str]] = [
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "name"),
    ("HOME", "/root", "name"),
    ("LS_COLORS", "rs=0:di=01;34:ln=01;36:mh=00:pi=40;33:so=01;35:do=01;35:bd=40;33;01:cd=40;33;01",
     "name"),
    ("GPG_AGENT_INFO", "/run/user/1000/gnupg/S.gpg-agent:0:1", "name"),
    ("SSH_AUTH_SOCK", "/tmp/ssh-k3Rq9ZmW/agent.1873", "name"),
    ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus,guid=8f3c2a9e7b1d4f6a0c5e8b2d9f1a3c7e",
     "name"),
    ("PYTHONHASHSEED", "2857192837", "name"),
    ("GIT_COMMIT", SHA1, "name"),
    ("IMAGE_DIGEST", f"sha256:{HEX64}", "name"),
    ("GPG_KEY", "A035C8C19219BA821ECEA86B64E628F8D684696D", "name"),
    ("PWD", "/home/app", "name"),
    ("OLDPWD", "/home/app/src", "name"),
    ("XAUTHORITY", "/run/user/1000/gdm/Xauthority", "name"),
    ("SSH_ASKPASS", "/usr/lib/ssh/x11-ssh-askpass", "name"),
    ("TOKENIZER_PATH", "/models/Tq8Lm2Vz9Kp4/tokenizer.json", "name"),
    ("TOKENIZERS_PARALLELISM", "false", "name"),
    ("KEYBOARD", "Xq8Lm2Vz9Kp4Wr7Nt3Yb6Hc", "name"),
    ("PUBLIC_KEY", "Xq8Lm2Vz9Kp4Wr7Nt3Yb6Hc", "name"),
    ("PASSWORD_MIN_LENGTH", "12", "name"),
    ("TOKEN_TTL", "3600", "name"),
    ("PASSWORD_FILE", "/run/secrets/db", "name"),
    ("SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf", "name"),
    ("AWS_ACCESS_KEY_ID", "AKIAQ7Z4XK2LM9VR3TB6", "name"),
    ("SECRET_NAME", "app-db-credentials", "name"),
    ("PASSWORD_STORE_DIR", "/home/u/.password-store", "name"),
    ("DOCKER_AUTH_CONFIG", '{"auths":{}}', "name"),
    ("DB_PASSWORD", "${DB_PASSWORD}", "value.template-reference"),
    ("NPM_TOKEN", "$NPM_TOKEN_FROM_CI", "value.template-reference"),
    ("DB_PASSWORD", "$(cat /run/secrets/db)", "whitespace"),
    ("API_TOKEN", "vault:secret/data/app#token", "value.template-reference"),
    ("DB_PASSWORD", "op://Production/db/password", "path-or-url"),
    ("STRIPE_SECRET", "aws-ssm:/prod/stripe/secret", "value.template-reference"),
    ("APP_SECRET", "ENC[AES256_GCM,data:Xq8Lm2Vz9Kp4,iv:Wr7Nt3Yb6Hc5,type:str]", "value.template-reference"),
    ("GITHUB_TOKEN", "{{secrets.GITHUB_TOKEN}}", "value.template-reference"),
    ("DATABASE_DSN", "postgres://db.internal:5432/app", "path-or-url"),
    ("SENTRY_DSN", "https://Xq8Lm2Vz9Kp4@o12345.ingest.sentry.io/67890", "path-or-url"),
    ("CACHE_DSN", "redis.internal:6379", "path-or-url"),
    ("SSH_PRIVATE_KEY", "~/.ssh/id_ed25519", "path-or-url"),
    ("API_KEY", "f54f932f-4ec0-4618-b345-c70775a503b7", "generic.uuid"),
    ("SECRET_SHA256", HEX64, "generic.hash-or-digest"),
    ("DB_PASSWORD", "changeme", "one-class"),
    ("DB_PASSWORD", "Change_Me_2024", "value.placeholder"),
    ("ADMIN_PASSWORD", "Password123!", "value.dummy-password"),
    ("API_TOKEN", "xxxxxxxxxxxxxxxxxxxx", "one-class"),
    ("API_KEY", "<your-api-key>", "value.placeholder"),
    ("JWT_SECRET", "Kq8X2z", "short"),
    ("SESSION_SECRET", "disabled", "boolean"),
    ("DB_PASSWORD", "correct horse battery staple", "whitespace"),
    ("AUTH_SECRET", "100000000000", "number"),
    ("APP_SECRET", "productionsecret", "one-class"),
    ("existingSecret", "my-release-postgresql", "generic.word-like"),
]


def test_tables_are_big_enough() -> None:
    assert len(POSITIVES) >= 25 and len(NEGATIVES) >= 25


@pytest.mark.parametrize(("name", "value"), POSITIVES, ids=[n for n, _ in POSITIVES])
def test_positive_judged_secret(name: str, value: str) -> None:
    j = judge(name, value)
    assert j.secret, j.reason


@pytest.mark.parametrize(("name", "value", "reason"), NEGATIVES,
                         ids=[f"{n}-{r}" for n, _, r in NEGATIVES])
def test_negative_not_judged_secret(name: str, value: str, reason: str) -> None:
    j = judge(name, value)
    assert not j.secret
    assert j.reason == reason


@pytest.mark.parametrize(("name", "value"), POSITIVES, ids=[n for n, _ in POSITIVES])
def test_positive_reported_once_by_scan(python_engine: Engine, name: str, value: str) -> None:
    found = scan_variables(python_engine, [(name, value)])
    assert [f.path for f in found] == [f"env:{name}"], [f.rule_id for f in found]


@pytest.mark.parametrize(("name", "value", "reason"), NEGATIVES,
                         ids=[f"{n}-{r}" for n, _, r in NEGATIVES])
def test_negative_not_reported_by_scan(python_engine: Engine, name: str, value: str, reason: str) -> None:
    assert [f.rule_id for f in scan_variables(python_engine, [(name, value)])] == []


def test_url_password_is_the_reported_part() -> None:
    value = "https://pub:Kq8Xm2Lw9Vr4Pn7H@sentry.internal/4"
    j = judge("SENTRY_DSN", value)
    assert value[j.offset : j.offset + j.length] == "Kq8Xm2Lw9Vr4Pn7H"


def test_heuristic_fires_where_no_rule_does(python_engine: Engine) -> None:
    """A base64 secret with ``/``: the generic path filter drops it, the name reports it."""
    (f,) = scan_variables(python_engine, [("MINIO_SECRET_KEY", BASE64_SLASH)])
    assert (f.rule_id, f.severity, f.confidence) == (RULE_ID, "medium", "medium")
    assert f.description == "High-entropy value in a secret-named variable"
    assert (f.path, f.line, f.column, f.end_column) == ("env:MINIO_SECRET_KEY", 1, 18, 18 + len(BASE64_SLASH))
    assert f.secret == BASE64_SLASH


def test_provider_rule_wins_over_the_heuristic(python_engine: Engine) -> None:
    (f,) = scan_variables(python_engine, [("AWS_SECRET_ACCESS_KEY", AWS_LIKE)])
    assert f.rule_id == "aws-secret-access-key"
    assert judge("AWS_SECRET_ACCESS_KEY", AWS_LIKE).secret  # the heuristic agreed, and stayed silent


@pytest.mark.parametrize(
    ("name", "segments"),
    [("DB_PASSWORD", ["db", "password"]), ("adminPassword", ["admin", "password"]),
     ("APIKey", ["apikey"]), ("postgresql.auth.password", ["postgresql", "auth", "password"]),
     ("OAuth2Token", ["oauth2", "token"]), ("__", [])],
)
def test_name_segments(name: str, segments: list[str]) -> None:
    assert name_segments(name) == segments


@pytest.mark.parametrize("name", ["TOKENIZER_PATH", "KEYBOARD", "PASSWORD_MIN_LENGTH", "SSH_AUTH_SOCK",
                                  "PWD", "CACHE_KEY", "SECRETARY_EMAIL", "MAX_TOKENS", "TOKEN_ID"])
def test_segment_aware_names(name: str) -> None:
    assert not is_secret_name(name)


def test_disabled_filter_is_honoured() -> None:
    """A config that switches an engine filter off switches it off for the heuristic too."""
    uuid = "f54f932f-4ec0-4618-b345-c70775a503b7"
    assert not judge("API_KEY", uuid).secret
    assert judge("API_KEY", uuid, disabled=frozenset({"generic.uuid"})).secret
