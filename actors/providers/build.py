"""From the ``[provider]`` config to a :class:`~actors.domain.edges.Provider`: one builder per kind.

``kind`` selects a provider (``maildir``, ``smtp``, ``ses``) or a ``chain`` of them
(``[[provider.chain]]`` tables, tried in order, each behind its own circuit breaker:
:mod:`actors.providers.chain`). A chain entry uses the ``[provider.<kind>]``
section unless it has its own (``[provider.chain.smtp]`` under its
``[[provider.chain]]``), so a chain can hold two SMTP relays.

Every provider signs what it sends with DKIM when ``[dkim]`` names keys (:func:`make_signer`,
:mod:`actors.domain.dkim`): the keys are read and checked here, once, at start-up.

Adding a provider is one module (a class with ``name``, ``open``, ``close`` and
``send``, see :class:`~actors.domain.edges.Provider`), its settings section in
``config/_model.py`` (a ``kind`` value and a section), and one builder in
:data:`BUILDERS`. Builders run at start-up and raise :class:`~config.ConfigError`
naming the key when a setting cannot work (no SES region anywhere), so a bad
profile stops start-up instead of failing every email later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from actors.domain.dkim import DkimKey, DkimSigner, load_private_key
from actors.domain.edges import Provider
from config import ChainEntryConfig, ConfigError, DkimConfig, ProviderConfig

__all__ = ["BUILDERS", "make_provider", "make_signer", "provider_names"]

# A builder gets the [provider] section, the chain entry it builds (None for a
# single provider), that entry's key ("provider.chain.0"; "provider" if single)
# and the DKIM signer every provider signs with (None: no [dkim] keys).
Builder = Callable[[ProviderConfig, ChainEntryConfig | None, str, DkimSigner | None], Provider]


def make_signer(config: DkimConfig, env: Mapping[str, str] | None = None) -> DkimSigner | None:
    """The signer of the ``[dkim]`` section, or None when it names no domain.

    Reads and parses every key now, so a missing file, a bad key or a key that does not
    match its algorithm stops start-up with a one-line error naming the field; the key's
    text never appears in it.
    """
    keys: dict[str, DkimKey] = {}
    for domain, entry in config.domains.items():
        where = f'dkim.domains."{domain}".'
        text = entry.private_key(domain, env)
        field = where + ("key_env" if entry.key_env else "key_file")
        try:
            private = load_private_key(text, entry.algorithm)
        except ValueError as exc:
            raise ConfigError(field, str(exc)) from None
        try:
            keys[domain] = DkimKey(domain, entry.selector, entry.algorithm, private)
        except ValueError as exc:
            bad = where + "selector" if "selector" in str(exc) else where.rstrip(".")
            raise ConfigError(bad, str(exc)) from None
    if not keys:
        if config.require:
            raise ConfigError("dkim.require", "true, but dkim.domains names no signing domain")
        return None
    return DkimSigner(keys, require=config.require)


def make_provider(config: ProviderConfig, *, signer: DkimSigner | None = None) -> Provider:
    """The provider the ``[provider]`` section describes (not opened yet), signing with
    ``signer`` (:func:`make_signer`) when one is given."""
    if config.kind == "chain":
        if not config.chain:
            raise ConfigError("provider.chain", "kind 'chain' needs at least one provider")
        from actors.providers.chain import ChainProvider

        links = [
            _build(config, entry, f"provider.chain.{i}", signer)
            for i, entry in enumerate(config.chain)
        ]
        return ChainProvider(
            links, failures=config.breaker.failures, cool_down=config.breaker.cool_down_s
        )
    return _build(config, None, "provider", signer)


def provider_names(config: ProviderConfig) -> list[str]:
    """The names that results of this config can record as ``provider``."""
    if config.kind == "chain":
        return [entry.label for entry in config.chain]
    return [config.kind]


def _build(
    config: ProviderConfig, entry: ChainEntryConfig | None, key: str, signer: DkimSigner | None
) -> Provider:
    kind = entry.kind if entry is not None else config.kind
    builder = BUILDERS.get(kind)
    if builder is None:
        known = ", ".join(sorted(BUILDERS))
        raise ConfigError(f"{key}.kind", f"unknown provider {kind!r} (known: {known}, chain)")
    try:
        return builder(config, entry, key, signer)
    except ValueError as exc:  # a provider refusing its settings (username without password)
        raise ConfigError(key if entry is not None else f"provider.{kind}", str(exc)) from None


def _maildir(
    config: ProviderConfig, entry: ChainEntryConfig | None, key: str, signer: DkimSigner | None
) -> Provider:
    from actors.providers.maildir import MaildirProvider

    provider = MaildirProvider(config.maildir_path, signer=signer)
    if entry is not None and entry.name:
        provider.name = entry.name  # a class default, set per instance
    return provider


def _smtp(
    config: ProviderConfig, entry: ChainEntryConfig | None, key: str, signer: DkimSigner | None
) -> Provider:
    from actors.providers.smtp import SmtpProvider

    own = entry is not None and entry.smtp is not None
    s = entry.smtp if entry is not None and entry.smtp is not None else config.smtp
    try:
        password = s.password()
    except ConfigError as exc:
        if not own:
            raise
        raise ConfigError(f"{key}.smtp.password", exc.reason) from None
    return SmtpProvider(
        s.host,
        s.port,
        username=s.username or None,
        password=password,
        starttls=s.starttls,
        use_tls=s.use_tls,
        timeout=s.timeout_s,
        pool_size=s.pool_size,
        name=entry.label if entry is not None else "smtp",
        signer=signer,
    )


def _ses(
    config: ProviderConfig, entry: ChainEntryConfig | None, key: str, signer: DkimSigner | None
) -> Provider:
    from botocore.exceptions import ProfileNotFound

    from actors.providers.ses import SesProvider, resolve_region

    own = entry is not None and entry.ses is not None
    s = entry.ses if entry is not None and entry.ses is not None else config.ses
    section = f"{key}.ses" if own else "provider.ses"
    used_by = f" (used by {key})" if entry is not None and not own else ""
    try:
        region = resolve_region(s.region, s.profile)
    except ProfileNotFound:
        raise ConfigError(
            f"{section}.profile", f"no AWS profile {s.profile!r} in the AWS config files{used_by}"
        ) from None
    if not region:
        raise ConfigError(
            f"{section}.region",
            "missing: set it, or AWS_REGION / AWS_DEFAULT_REGION, or a region in the AWS "
            f"profile's config{used_by}",
        )
    return SesProvider(
        region,
        endpoint_url=s.endpoint_url or None,
        configuration_set=s.configuration_set or None,
        profile=s.profile or None,
        timeout=s.timeout_s,
        pool_size=s.pool_size,
        name=entry.label if entry is not None else "ses",
        signer=signer,
    )


BUILDERS: dict[str, Builder] = {"maildir": _maildir, "smtp": _smtp, "ses": _ses}
