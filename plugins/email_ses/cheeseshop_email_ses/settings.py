"""The ``[email_ses]`` settings section (variables ``CHEESESHOP_EMAIL_SES__<KEY>``)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from cheeseshop import PluginSettings

__all__ = ["DEFAULT_SNS_TRUSTED_URL_PATTERN", "SESSettings"]

#: Where SNS keeps its signing certificates and answers SubscribeURLs: https, on the
#: regional SNS host of any AWS partition (``sns.eu-west-1.amazonaws.com``, and the
#: ``.amazonaws.com.cn`` hosts of the China regions), and nowhere else. The slash after
#: the host keeps ``sns.x.amazonaws.com.evil.example`` out.
DEFAULT_SNS_TRUSTED_URL_PATTERN = r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"

_REGION = r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$"
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_CONFIGURATION_SET = r"^[A-Za-z0-9_-]{1,64}$"


def _comma_list(value: Any) -> Any:
    # From the environment a list comes as "a,b" (or as JSON, which config.py decodes).
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class SESSettings(PluginSettings):
    """How to reach Amazon SES, and which SNS messages the feedback endpoint believes."""

    region: str = Field(
        pattern=_REGION,
        description="AWS region of the SES account that sends the mail, e.g. eu-west-1.",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="SES endpoint, e.g. http://127.0.0.1:5000 for a local stand-in. "
        "Default: AWS's endpoint for the region.",
    )
    configuration_set: str | None = Field(
        default=None,
        pattern=_CONFIGURATION_SET,
        description="SES configuration set every message is sent with (its event "
        "destinations publish bounces and complaints). Default: none.",
    )
    access_key_id: str | None = Field(
        default=None,
        description="AWS access key id. Default: none, boto3's usual chain finds the "
        "credentials (environment, shared files, instance or task role).",
    )
    secret_access_key: SecretStr | None = Field(
        default=None, description="AWS secret access key, with access_key_id. Never printed."
    )
    session_token: SecretStr | None = Field(
        default=None, description="AWS session token, for temporary credentials. Never printed."
    )
    timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Timeout of each call to SES, and of each fetch of an SNS certificate "
        "or SubscribeURL.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts per e-mail within one send: boto3's standard retry mode "
        "retries throttling and 5xx answers with backoff. The outbox retries later anyway.",
    )
    sns_topic_arns: list[str] = Field(
        default_factory=list,
        description="SNS topics whose messages the endpoint /_ses/sns/ accepts (comma-"
        "separated in the environment). Default: none, every message is refused.",
    )
    sns_trusted_url_pattern: str = Field(
        default=DEFAULT_SNS_TRUSTED_URL_PATTERN,
        description="Regular expression the start of a SigningCertURL or SubscribeURL "
        "must match before it is fetched. Default: https on an AWS SNS host. Change it "
        "for tests only.",
    )
    sns_max_age_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Oldest SNS message accepted, by its Timestamp: an older one is "
        "refused as a possible replay.",
    )

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:5000")
        return value.rstrip("/")

    @field_validator("sns_topic_arns", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("sns_topic_arns")
    @classmethod
    def _arns(cls, value: list[str]) -> list[str]:
        bad = [arn for arn in value if not _TOPIC_ARN.match(arn)]
        if bad:
            raise ValueError(
                f"not an SNS topic ARN: {', '.join(bad)} "
                "(write arn:aws:sns:<region>:<account>:<topic>)"
            )
        return value

    @field_validator("sns_trusted_url_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return value

    @model_validator(mode="after")
    def _key_pairs(self) -> SESSettings:
        # Half a key pair would silently fall back to boto3's chain: say so instead.
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give access_key_id and secret_access_key together, or neither")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        return self

    def trusts(self, url: str) -> bool:
        """Whether ``url`` may be fetched as an SNS certificate or subscription URL."""
        parts = urlsplit(url)
        # Credentials in a URL have no business here, and "https://sns...@elsewhere/"
        # is the classic way to make a host check look at the wrong host.
        if parts.username is not None or parts.password is not None:
            return False
        return re.match(self.sns_trusted_url_pattern, url) is not None
