"""Typed settings, read once at start-up.

Sources, later ones winning: defaults, the TOML file named by ``CHEESESHOP_CONFIG`` (or
passed explicitly), then ``CHEESESHOP_*`` environment variables. This is the only module
that reads the environment.

Plugins add their own typed sections (a pydantic model returned by their
``cheeseshop_settings`` hook). A section named ``search_es`` is read from the TOML table
``[search_es]`` and from variables ``CHEESESHOP_SEARCH_ES__<KEY>``.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "ConfigError",
    "PluginSettings",
    "Settings",
    "load_settings",
    "redacted",
]

ENV_PREFIX = "CHEESESHOP_"
MiB = 1024 * 1024
GiB = 1024 * MiB
#: URL schemes ``broker_url`` may use: Redis (plain or TLS) and Amazon SQS.
BROKER_SCHEMES = ("redis", "rediss", "sqs")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the key and says what to fix."""


class PluginSettings(BaseModel):
    """Base class for a plugin's own settings section.

    Unknown keys are refused so that a typo names itself at start-up.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """The core's settings. Every field can be set as ``CHEESESHOP_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        # Nested plugin sections are handled by load_settings, not by pydantic-settings.
        env_nested_delimiter=None,
    )

    data_dir: Path = Field(
        default=Path("data"),
        description="Where the embedded default keeps its SQLite database, files and e-mail.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+asyncpg://user@host/db. "
        "Default: SQLite in data_dir.",
    )
    plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Plugins to enable, by entry-point name."
    )
    blocked_plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Plugins never to load, even the core's defaults."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs sessions and forms. Default: generated once into data_dir.",
    )
    base_url: str | None = Field(
        default=None,
        description="Public URL of this index (e.g. https://pypi.example.com). "
        "Default: taken from each request.",
    )
    files_url: str | None = Field(
        default=None,
        description="Public URL files are served from (a CDN), ending in /packages/ as "
        "pypi.org's https://files.pythonhosted.org/packages/ does: mirrors refuse file URLs whose "
        "path does not start with /packages/. Default: <base_url>/packages/.",
    )
    token_prefix: str = Field(default="cheeseshop-", description="Prefix of API tokens.")
    max_file_size: int = Field(default=100 * MiB, gt=0, description="Upload size limit, bytes.")
    max_project_size: int = Field(
        default=10 * GiB, gt=0, description="Total size limit of one project, bytes."
    )
    upload_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Longest time an upload body may take to arrive; slower ones get 408.",
    )
    orphan_grace_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="Stored files without a database row older than this are deleted.",
    )
    prohibit_stdlib_names: bool = Field(
        default=True,
        description="Refuse new projects named like a standard-library module (as PyPI does).",
    )
    prohibited_names: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Further project names no one may register."
    )
    auto_migrate: bool = Field(
        default=True, description="Apply database migrations when `cheeseshop serve` starts."
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis (redis://host:6379/0): the page cache shared by all web processes. "
        "Default: none, each process caches pages itself.",
    )
    page_cache_bytes: int = Field(
        default=256 * MiB, ge=0, description="Memory for cached pages per web process (without Redis); 0 disables it."
    )
    page_cache_poll_seconds: float = Field(
        default=0.5,
        ge=0,
        description="Without Redis: how often a web process reads the journal for changes "
        "made by other processes, the CLI included (0: never).",
    )
    rate_new_projects_per_user: str = Field(
        default="20/hour",
        description="New projects one user may create (as PyPI: 20 per hour); a `limits` "
        "rule such as `20/hour`. Counted in Redis when `redis_url` is set.",
    )
    rate_new_projects_per_ip: str = Field(
        default="40/hour", description="New projects created from one address (as PyPI: 40 per hour)."
    )
    rate_auth_failures_per_ip: str = Field(
        default="30/minute",
        description="Uploads with a wrong token from one address before that address is "
        "refused (429) for the rest of the window.",
    )
    outbox_sweep_seconds: float = Field(
        default=30.0, gt=0, description="How often undelivered events are looked for."
    )
    outbox_delivery: Literal["process", "inline"] = Field(
        default="process",
        description="Without a broker, who delivers events: 'process' — one `cheeseshop deliver` "
        "process, which `cheeseshop serve` starts beside the web processes, so plugin work "
        "(e-mail, CDN purges) never competes with requests; 'inline' — each web process in "
        "the background (for running the app under another ASGI server alone).",
    )
    outbox_poll_seconds: float = Field(
        default=0.25,
        gt=0,
        description="How often `cheeseshop deliver` looks for new events: the longest a "
        "committed change waits before its plugins hear of it.",
    )
    outbox_retry_seconds: float = Field(
        default=10.0, gt=0, description="First retry delay of a failed delivery; doubles each time."
    )
    outbox_max_retry_seconds: float = Field(
        default=3600.0, gt=0, description="Longest delay between two delivery attempts."
    )
    outbox_lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long one deliverer may hold an event before another may take it over.",
    )
    # -- the worker side (cheeseshop worker / beat); see docs/deploy.md ------------------
    broker_url: SecretStr | None = Field(
        default=None,
        description="Celery broker, redis://host:6379/1 or sqs://[KEY:SECRET@]. When set, "
        "events are delivered by `cheeseshop worker` and periodic work runs from "
        "`cheeseshop beat`. Default: none, the web process does both.",
    )
    broker_queue: str = Field(
        default="cheeseshop",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Name of the queue the worker's tasks travel on.",
    )
    broker_visibility_timeout_seconds: int | None = Field(
        default=None,
        gt=0,
        description="How long a task taken by a worker that vanished stays hidden before "
        "the broker hands it out again. Default: outbox_lease_seconds + 60.",
    )
    broker_connect_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Longest wait for the broker when a request queues a delivery.",
    )
    worker_key_prefix: str = Field(
        default="cheeseshop:",
        description="Prefix of the Redis keys of the broker (on Redis), the beat schedule "
        "and the periodic tasks' locks.",
    )
    sqs_region: str | None = Field(
        default=None, description="AWS region of the SQS broker. Default: boto3's."
    )
    sqs_queue_name_prefix: str = Field(
        default="", description="Prefix of the SQS queue's name (e.g. prod-)."
    )
    sqs_endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/?#]+/?$",
        description="SQS endpoint, e.g. http://127.0.0.1:5000 for a local SQS. Default: AWS's.",
    )
    # -- e-mail (the default `email` plugin); see docs/configuring.md --------------------
    mail_from: str = Field(
        default="Cheeseshop <cheeseshop@localhost>",
        description="Sender (From) of the e-mail the index sends, e.g. "
        "'Example Index <noreply@pypi.example.com>'; its domain also ends each Message-ID.",
    )
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server that sends e-mail. Default: none, e-mail is written to "
        "data_dir/mail as .eml files and logged.",
    )
    smtp_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="SMTP port. Default: 465 with smtp_security=ssl, 25 with none, else 587.",
    )
    smtp_security: str = Field(
        default="starttls",
        pattern=r"^(starttls|ssl|none)$",
        description="starttls (upgrade a plain connection; refused if the server cannot), "
        "ssl (TLS from the start) or none.",
    )
    smtp_username: str | None = Field(
        default=None, description="SMTP login name. Default: none, no login."
    )
    smtp_password: SecretStr | None = Field(default=None, description="SMTP login password.")
    smtp_ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) to trust for the SMTP server's certificate, "
        "instead of the system's.",
    )
    smtp_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest wait for the SMTP server at each step."
    )

    # Plugin sections, keyed by plugin name. Filled by load_settings.
    sections: dict[str, Any] = Field(default_factory=dict, exclude=True, repr=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings passes every value explicitly. Left on, pydantic-settings would
        # read os.environ a second time (model_validate runs __init__), so environ={}
        # would not keep a developer's CHEESESHOP_* variables out of a test.
        return (init_settings,)

    @field_validator("rate_new_projects_per_user", "rate_new_projects_per_ip", "rate_auth_failures_per_ip")
    @classmethod
    def _rate_rule(cls, value: str) -> str:
        from cheeseshop.ratelimit import parse_rule

        try:
            parse_rule(value)
        except ValueError:
            raise ValueError("write a rate as '<count>/<second|minute|hour|day>', e.g. '20/hour'") from None
        return value

    @field_validator("plugins", "blocked_plugins", "prohibited_names", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("files_url")
    @classmethod
    def _files_under_packages(cls, value: str | None) -> str | None:
        # bandersnatch (and so every PyPI mirror) refuses a file URL whose path does not
        # start with /packages/: a CDN at another path would break mirrors, not start-up.
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("give an http(s) URL, e.g. 'https://files.example.com/packages/'")
        if parts.path.rstrip("/") != "/packages":
            raise ValueError(
                "the path must be /packages/ (e.g. 'https://files.example.com/packages/'): "
                "mirrors refuse file URLs whose path does not start with /packages/"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: SecretStr | None) -> SecretStr | None:
        # Only the transports the worker is built and tested for; the message never
        # repeats the URL, which may carry credentials.
        if value is not None and value.get_secret_value().partition("://")[0] not in BROKER_SCHEMES:
            raise ValueError(f"must start with one of {', '.join(s + '://' for s in BROKER_SCHEMES)}")
        return value

    @field_validator("mail_from")
    @classmethod
    def _one_address(cls, value: str) -> str:
        from email.policy import default

        # Parsed as the From header will be, so a bad sender stops start-up instead of
        # failing every e-mail.
        problem = "give one address, e.g. 'Example Index <noreply@example.com>'"
        if "\n" in value or "\r" in value:
            raise ValueError(problem)
        try:
            header = default.header_factory("From", value)
            addresses = getattr(header, "addresses", ())
        except Exception:  # the stdlib's address parser fails on some garbage (IndexError)
            raise ValueError(problem) from None
        if len(addresses) != 1 or header.defects or not addresses[0].username or not addresses[0].domain:
            raise ValueError(problem)
        return value

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'cheeseshop.db').resolve()}"

    @property
    def upload_directory(self) -> Path:
        """Where uploads stream to before they are stored (``data_dir/tmp``; made at start-up)."""
        return self.data_dir / "tmp"

    @property
    def is_embedded(self) -> bool:
        """True when running on SQLite: one machine, in-process delivery."""
        return self.resolved_database_url.startswith("sqlite")

    def section(self, name: str) -> Any:
        """The validated settings section of plugin ``name``."""
        try:
            return self.sections[name]
        except KeyError:
            raise ConfigError(f"no settings section {name!r} (is the plugin enabled?)") from None

    def secret(self) -> str:
        """The secret key, generated into ``data_dir/secret_key`` the first time."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written whole to a private temporary file, then linked into place: a process
            # racing us either wins the link or reads the complete file the winner linked.
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret_key-")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
                try:
                    os.link(temporary, path)
                except FileExistsError:
                    pass
            finally:
                os.unlink(temporary)
        return path.read_text().strip()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (CHEESESHOP_CONFIG)") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


def _describe(error: ValidationError, section: str | None = None) -> str:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if section:
            env = f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
            key = f"{section}.{key}"
        else:
            env = f"{ENV_PREFIX}{key.upper()}"
        problems.append(f"{key} ({env}): {item['msg']}")
    return "invalid settings: " + "; ".join(problems)


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the core settings from the TOML file and the environment.

    Plugin sections are validated later, once the plugins are known (see
    :func:`with_plugin_sections`). Raises :class:`ConfigError` naming the bad key.
    """
    env = os.environ if environ is None else environ
    if config_file is None and env.get(f"{ENV_PREFIX}CONFIG"):
        config_file = Path(env[f"{ENV_PREFIX}CONFIG"])
    file_values = _read_toml(config_file) if config_file else {}
    core_table = {k: v for k, v in file_values.items() if not isinstance(v, dict)}
    env_values = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and "__" not in key and key != f"{ENV_PREFIX}CONFIG"
    }
    known = set(Settings.model_fields) - {"sections"}
    values = {**core_table, **{k: v for k, v in env_values.items() if k in known}}
    # Overrides are given like the TOML file: plain values for the core, tables for plugins.
    override_tables = {k: v for k, v in (overrides or {}).items() if isinstance(v, Mapping)}
    values.update({k: v for k, v in (overrides or {}).items() if k not in override_tables})
    unknown = sorted(set(core_table) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {config_file}: {', '.join(unknown)}")
    try:
        # _env_prefix trick not needed: we pass everything explicitly, so the
        # process environment is read exactly once, here.
        settings = Settings.model_validate(values)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
    raw_sections = {k: v for k, v in file_values.items() if isinstance(v, dict)}
    for key, value in env.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            section, _, field = key[len(ENV_PREFIX) :].partition("__")
            raw_sections.setdefault(section.lower(), {})[field.lower()] = _env_value(value)
    for section, table in override_tables.items():
        raw_sections.setdefault(section, {}).update(table)
    return settings.model_copy(update={"sections": {"__raw__": raw_sections}})


def _env_value(value: str) -> Any:
    """Plugin settings from the environment: JSON for lists and tables, else the string."""
    if value.lstrip().startswith(("[", "{")):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def with_plugin_sections(
    settings: Settings, models: Mapping[str, type[PluginSettings]]
) -> Settings:
    """Validate each plugin's section against its model; return settings carrying them."""
    raw = settings.sections.get("__raw__", {})
    sections: dict[str, Any] = {"__raw__": raw}
    for name, model in models.items():
        try:
            sections[name] = model.model_validate(raw.get(name, {}))
        except ValidationError as error:
            raise ConfigError(_describe(error, section=name)) from None
    return settings.model_copy(update={"sections": sections})


_SECRET_WORDS = (
    "secret", "password", "passphrase", "credential", "api_key", "access_key", "_token", "dsn"
)
# Secret only as the last word of a key: ``token``, ``auth_token``, ``application_key``
# are secrets; ``token_prefix`` and ``key_id`` are not.
_SECRET_LAST_WORDS = ("key", "token")


def _looks_secret(key: str) -> bool:
    key = key.lower()
    return any(word in key for word in _SECRET_WORDS) or key.split("_")[-1] in _SECRET_LAST_WORDS


def redacted(settings: Settings) -> dict[str, Any]:
    """Effective settings as plain data, with secret-looking values masked."""

    def mask(data: Mapping[str, Any]) -> dict[str, Any]:
        shown: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, BaseModel):
                value = value.model_dump(mode="json")
            if isinstance(value, Mapping):
                shown[key] = mask(value)
            elif value is not None and _looks_secret(key):
                shown[key] = "********"
            else:
                shown[key] = value
        return shown

    core = settings.model_dump(mode="json", exclude={"sections", "secret_key"})
    core["secret_key"] = "********"
    core["database_url"] = _mask_url(settings.resolved_database_url)
    plugins = {k: v for k, v in settings.sections.items() if k != "__raw__"}
    return {"core": mask(core) | {"database_url": core["database_url"]}, **mask(plugins)}


def _mask_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
