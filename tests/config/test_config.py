"""Config loading: profiles, environment overrides, errors that name the key, secrets."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from config import (
    PROJECT_ROOT,
    Config,
    ConfigError,
    load_config,
    profile_names,
    redact_url,
    resolve_secret,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


# --- profiles ----------------------------------------------------------------------


def test_shipped_profiles_load_with_no_environment() -> None:
    assert {"embedded", "distributed"} <= set(profile_names())
    embedded = load_config("embedded", env={})
    assert embedded.bus.kind == "memory"
    assert embedded.store.kind == "sqlite"
    assert embedded.provider.kind == "maildir"
    assert embedded.profile.endswith("embedded.toml")
    distributed = load_config("distributed", env={})
    assert distributed.bus.kind == "rabbitmq"
    assert distributed.store.kind == "elasticsearch"
    assert distributed.provider.kind == "smtp"
    assert (distributed.provider.smtp.host, distributed.provider.smtp.port) == ("localhost", 1025)


def test_shipped_profiles_match_the_struct_defaults_where_they_should() -> None:
    # The embedded profile documents every key; its values are the defaults.
    cfg = load_config("embedded", env={})
    defaults = Config()
    assert cfg.store.batch_size == defaults.store.batch_size == 500
    assert cfg.limits == defaults.limits
    assert cfg.retry == defaults.retry
    assert cfg.bus == defaults.bus


def test_every_key_of_the_model_is_documented_in_both_profiles() -> None:
    import tomllib

    def keys(struct: type[msgspec.Struct], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for f in msgspec.structs.fields(struct):
            tp = f.type
            if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
                out |= keys(tp, f"{prefix}{f.name}.")
            elif f.name != "profile":
                out.add(prefix + f.name)
        return out

    def flat(d: dict[str, object], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for k, v in d.items():
            tables = ("per_domain", "unknown_outcome_by_category", "domains", "default_senders")
            if isinstance(v, dict) and k not in tables:
                out |= flat(v, f"{prefix}{k}.")
            else:
                out.add(prefix + k)
        return out

    for name in ("embedded", "distributed"):
        text = (PROJECT_ROOT / "config" / f"{name}.toml").read_text()
        data = tomllib.loads(text)
        missing = keys(Config) - flat(data) - {"throttle.per_domain"}
        assert not missing, f"{name}.toml lacks {sorted(missing)}"
        for line in text.splitlines():
            if "=" in line and not line.lstrip().startswith(("#", '"')):
                assert "#" in line, f"{name}.toml: undocumented line {line!r}"


def test_profile_path_is_used_as_is(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\nbatch_size = 7\n[bus]\nkind = "rabbitmq"\n')
    cfg = load_config(path, env={})
    assert cfg.store.batch_size == 7
    assert cfg.bus.kind == "rabbitmq"
    assert cfg.profile == str(path)
    assert cfg.retry.max_attempts == 5  # absent keys keep their defaults


def test_unknown_profile_name() -> None:
    with pytest.raises(ConfigError, match="no-such-profile"):
        load_config("no-such-profile", env={})


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[store\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert str(path) in str(err.value)
    assert "invalid TOML" in str(err.value)


# --- unknown keys and bad values ---------------------------------------------------


def test_unknown_key_in_toml_is_named_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[store]\nbatch_sise = 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == "store.batch_sise"
    assert str(err.value).startswith("store.batch_sise: unknown key")
    assert "did you mean 'batch_size'" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_section_in_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[stor]\nbatch_size = 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == "stor"


def test_unknown_nested_key_in_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[provider.smtp]\nhots = 'x'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == "provider.smtp.hots"


def test_profile_key_is_not_accepted_from_toml(tmp_path: Path) -> None:
    path = write(tmp_path, 'profile = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == "profile"


def test_unknown_key_in_env_is_named_with_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("embedded", env={"MAILACTORS__STORE__BATCHSIZE": "10"})
    assert err.value.key == "store.batchsize"
    assert "MAILACTORS__STORE__BATCHSIZE" in str(err.value)
    assert "embedded.toml" in str(err.value)


def test_unknown_section_in_env() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("embedded", env={"MAILACTORS__NOPE__X": "1"})
    assert err.value.key == "nope"


def test_env_key_below_a_scalar_is_unknown() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("embedded", env={"MAILACTORS__STORE__BATCH_SIZE__X": "1"})
    assert err.value.key == "store.batch_size.x"


def test_unrelated_env_vars_are_ignored() -> None:
    cfg = load_config("embedded", env={"MAILACTORS_TOKEN": "x", "PATH": "/bin", "HOME": "/"})
    assert cfg.store.batch_size == 500


def test_bad_type_in_env_names_key_expectation_and_value() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("embedded", env={"MAILACTORS__STORE__BATCH_SIZE": "abc"})
    assert str(err.value).startswith("store.batch_size: expected int >= 1, got 'abc'")
    assert "embedded.toml" in str(err.value)


def test_constraint_violation_in_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[store]\nbatch_size = 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert str(err.value) == f"store.batch_size: expected int >= 1, got 0 (in {path})"


def test_bad_type_in_toml(tmp_path: Path) -> None:
    path = write(tmp_path, '[retry]\nmax_attempts = "five"\n')
    with pytest.raises(ConfigError, match=r"retry\.max_attempts: expected int >= 1, got 'five'"):
        load_config(path, env={})


def test_bad_literal(tmp_path: Path) -> None:
    path = write(tmp_path, '[bus]\nkind = "kafka"\n')
    with pytest.raises(ConfigError, match=r"bus\.kind: expected one of .*'memory'.*got 'kafka'"):
        load_config(path, env={})


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "store = 3\n")
    with pytest.raises(ConfigError, match="store: expected a table"):
        load_config(path, env={})


def test_bad_value_inside_a_list(tmp_path: Path) -> None:
    path = write(tmp_path, '[limits]\nallowed_attachment_types = ["application/pdf", 3]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == "limits.allowed_attachment_types"


def test_cross_field_check_names_the_section_and_the_source() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("embedded", env={"MAILACTORS__RETRY__BASE_DELAY_S": "1000"})
    assert err.value.key == "retry"
    assert "base_delay_s" in str(err.value)
    assert "MAILACTORS__RETRY__BASE_DELAY_S" in str(err.value)


def test_tls_files_go_together() -> None:
    with pytest.raises(ConfigError, match="grpc: tls_cert_file and tls_key_file"):
        load_config("embedded", env={}, overrides={"grpc.tls_cert_file": "cert.pem"})


# --- environment overrides ---------------------------------------------------------


def test_env_overrides_convert_to_the_field_type() -> None:
    env = {
        "MAILACTORS__STORE__BATCH_SIZE": "1000",
        "MAILACTORS__RETRY__JITTER": "0.5",
        "MAILACTORS__BUS__QUORUM": "false",
        "MAILACTORS__BUS__KIND": "rabbitmq",
        "MAILACTORS__LIMITS__ALLOWED_ATTACHMENT_TYPES": '["text/plain", "application/pdf"]',
        "MAILACTORS__THROTTLE__PER_DOMAIN": '{"gmail.com": 20}',
        "MAILACTORS__PROVIDER__SMTP__PORT": "2525",
    }
    cfg = load_config("embedded", env=env)
    assert cfg.store.batch_size == 1000
    assert cfg.retry.jitter == 0.5
    assert cfg.bus.quorum is False
    assert cfg.bus.kind == "rabbitmq"
    assert cfg.limits.allowed_attachment_types == ("text/plain", "application/pdf")
    assert cfg.throttle.per_domain == {"gmail.com": 20.0}
    assert cfg.provider.smtp.port == 2525


@pytest.mark.parametrize(
    ("text", "value"), [("true", True), ("1", True), ("0", False), ("FALSE", False)]
)
def test_env_bools(text: str, value: bool) -> None:
    assert load_config("embedded", env={"MAILACTORS__BUS__QUORUM": text}).bus.quorum is value


def test_env_bad_bool() -> None:
    with pytest.raises(ConfigError, match=r"bus\.quorum: expected bool .*got 'maybe'"):
        load_config("embedded", env={"MAILACTORS__BUS__QUORUM": "maybe"})


def test_env_names_are_case_insensitive() -> None:
    cfg = load_config("embedded", env={"mailactors__Store__Batch_Size": "9"})
    assert cfg.store.batch_size == 9


def test_env_dict_entry() -> None:
    cfg = load_config("embedded", env={"MAILACTORS__THROTTLE__PER_DOMAIN__GMAIL.COM": "5"})
    assert cfg.throttle.per_domain == {"gmail.com": 5.0}


def test_env_list_must_be_json() -> None:
    with pytest.raises(ConfigError, match=r"limits\.allowed_attachment_types: .*JSON.*'pdf'"):
        load_config("embedded", env={"MAILACTORS__LIMITS__ALLOWED_ATTACHMENT_TYPES": "pdf"})


def test_overrides_win_over_env() -> None:
    cfg = load_config(
        "embedded",
        env={"MAILACTORS__STORE__BATCH_SIZE": "9"},
        overrides={"store": {"batch_size": 11}, "retry.max_attempts": 2},
    )
    assert cfg.store.batch_size == 11
    assert cfg.retry.max_attempts == 2
    assert cfg.store.kind == "sqlite"  # a nested override merges, it does not replace


def test_bad_override_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("embedded", env={}, overrides={"store.batch_size": -1})
    assert err.value.key == "store.batch_size"
    assert "overrides" in str(err.value)


def test_config_is_frozen() -> None:
    cfg = load_config("embedded", env={})
    with pytest.raises(AttributeError):
        cfg.store = cfg.store  # type: ignore[misc]


# --- paths ---------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_project_root_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config("embedded", env={})
    assert Path(cfg.templates.dir) == PROJECT_ROOT / "templates"
    assert Path(cfg.store.sqlite_path) == PROJECT_ROOT / "var" / "emails.sqlite3"
    assert (Path(cfg.templates.dir) / "welcome" / "subject.txt").is_file()


def test_absolute_paths_and_root_override(tmp_path: Path) -> None:
    cfg = load_config(
        "embedded",
        env={"MAILACTORS__SERVICE__ROOT": str(tmp_path)},
        overrides={"templates.dir": "/opt/tpl"},
    )
    assert cfg.templates.dir == "/opt/tpl"
    assert cfg.store.sqlite_path == str(tmp_path / "var" / "emails.sqlite3")


# --- secrets -------------------------------------------------------------------------


def test_repr_and_redacted_hide_url_passwords() -> None:
    env = {"MAILACTORS__BUS__URL": "amqp://admin:hunter2@broker:5672/vhost"}
    cfg = load_config("distributed", env=env)
    assert cfg.bus.url == "amqp://admin:hunter2@broker:5672/vhost"  # usable value
    for text in (repr(cfg), str(cfg), repr(cfg.bus), str(cfg.redacted())):
        assert "hunter2" not in text
        assert "amqp://admin:***@broker:5672/vhost" in text


def test_errors_do_not_leak_url_passwords() -> None:
    env = {"MAILACTORS__BUS__URL_ENV": "amqp://u:hunter2@h/"}  # a URL where a name belongs
    with pytest.raises(ConfigError) as err:
        load_config("embedded", env=env)
    assert err.value.key == "bus.url_env"
    assert "hunter2" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config("embedded", env={"MAILACTORS__BUS__URL": "http://u:hunter2@h/"})
    assert err.value.key == "bus"
    assert "hunter2" not in str(err.value)


def test_redact_url() -> None:
    assert redact_url("amqp://guest:guest@host") == "amqp://guest:***@host"
    assert redact_url("http://127.0.0.1:9200") == "http://127.0.0.1:9200"
    assert redact_url("http://user@host") == "http://user@host"


def test_secret_from_env_never_appears_in_config() -> None:
    env = {"MAILACTORS__PROVIDER__SMTP__PASSWORD_ENV": "SMTP_PW", "SMTP_PW": "s3cret-value"}
    cfg = load_config("distributed", env=env)
    assert cfg.provider.smtp.password(env) == "s3cret-value"
    assert "s3cret-value" not in repr(cfg)
    assert "s3cret-value" not in str(cfg.redacted())


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("tok-123\n")
    cfg = load_config("embedded", env={}, overrides={"grpc.token_file": str(secret)})
    assert cfg.grpc.token({}) == "tok-123"
    assert "tok-123" not in repr(cfg)


def test_missing_secret_is_an_error_not_none() -> None:
    cfg = load_config("embedded", env={}, overrides={"grpc.token_env": "MA_TEST_TOKEN"})
    with pytest.raises(ConfigError, match="MA_TEST_TOKEN is not set"):
        cfg.grpc.token({})
    assert load_config("embedded", env={}).grpc.token({}) is None  # auth off


def test_resolve_secret_prefers_env_then_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("from-file")
    assert resolve_secret(env_var="PW", file=f, env={"PW": "from-env"}) == "from-env"
    assert resolve_secret(env_var="PW", file=f, env={}) == "from-file"
    assert resolve_secret(env={}) is None
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_secret(file=tmp_path / "missing", env={})


def test_broker_password_from_env_is_put_in_the_url() -> None:
    env = {"MAILACTORS__BUS__PASSWORD_ENV": "RMQ_PW", "RMQ_PW": "p@ss:word"}
    cfg = load_config("distributed", env=env)
    assert cfg.bus.resolved_url(env) == "amqp://guest:p%40ss%3Aword@127.0.0.1:5672/"
    url_env = {"MAILACTORS__BUS__URL_ENV": "RMQ_URL", "RMQ_URL": "amqps://u:v@h/"}
    assert load_config("distributed", env=url_env).bus.resolved_url(url_env) == "amqps://u:v@h/"


def test_default_env_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILACTORS__SWEEPER__RATE", "7")
    assert load_config("embedded").sweeper.rate == 7.0
    monkeypatch.delenv("MAILACTORS__SWEEPER__RATE")
    assert "MAILACTORS__SWEEPER__RATE" not in os.environ
