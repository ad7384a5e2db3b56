"""Plugin discovery (stevedore) and the typed hook facade over pluggy.

Load sequence: the core's default plugins (registered ``trylast`` in their hookimpls, so
any other plugin overrides them), then the plugins named in settings, loaded by stevedore
from the entry-point group ``cheeseshop.plugins``; then ``check_pending()`` (a hookimpl
with no matching spec is an error) and the single-slot check.

Core code calls :class:`Hooks` methods, never ``pm.hook.x(**kw)``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy
from stevedore import NamedExtensionManager

from cheeseshop import hookspecs
from cheeseshop.config import ConfigError, PluginSettings, Settings, with_plugin_sections

if TYPE_CHECKING:
    from quart import Quart

    from cheeseshop.notify import EmailSender
    from cheeseshop.outbox.dispatch import EventDispatcher
    from cheeseshop.storage import FileStorage
    from cheeseshop.upload.candidate import DescribedRelease, UploadCandidate
    from cheeseshop.worker.schedule import PeriodicTask

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "Hooks",
    "PluginError",
    "PluginInfo",
    "hookimpl",
    "installed_plugins",
    "load_plugins",
]

ENTRY_POINT_GROUP = "cheeseshop.plugins"
hookimpl = pluggy.HookimplMarker("cheeseshop")

#: The core's own behaviour, shipped as plugins exactly like outside ones.
DEFAULT_PLUGINS: dict[str, str] = {
    "local_storage": "cheeseshop.storage.local",
    "embedded_outbox": "cheeseshop.outbox.embedded",
    "page_cache": "cheeseshop.cache.plugin",
    "email": "cheeseshop.notify.plugin",
    "celery": "cheeseshop.worker.plugin",
}

#: Provider hooks of which exactly one implementation is used.
SINGLE_SLOTS = ("cheeseshop_file_storage", "cheeseshop_event_dispatcher", "cheeseshop_email_sender")


class PluginError(ConfigError):
    """A plugin could not be found, loaded or combined; stops start-up."""


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """One registered plugin, as shown by ``cheeseshop plugins``."""

    name: str
    module: str
    version: str | None
    default: bool
    hooks: tuple[str, ...]


def installed_plugins() -> dict[str, str]:
    """Plugins installed in this environment: entry-point name -> ``module:attr``."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def declared_hooks(target: str) -> tuple[str, ...]:
    """The hooks the installed plugin ``module[:attr]`` implements, without enabling it.

    Raises ImportError (or whatever importing it raises) when it cannot be loaded.
    """
    module_name, _, attribute = target.partition(":")
    plugin: Any = importlib.import_module(module_name)
    for part in filter(None, attribute.split(".")):
        plugin = getattr(plugin, part)
    return tuple(
        sorted(
            name
            for name in dir(plugin)
            if name.startswith("cheeseshop_") and hasattr(getattr(plugin, name), "cheeseshop_impl")
        )
    )


def _load_named(names: Sequence[str]) -> list[tuple[str, Any, str | None]]:
    missing: list[str] = []
    failures: list[str] = []

    def on_missing(found: Iterable[str]) -> None:
        missing.extend(found)

    def on_failure(_manager: Any, entrypoint: Any, error: Exception) -> None:
        failures.append(f"{entrypoint.name} ({entrypoint.value}): {type(error).__name__}: {error}")

    manager = NamedExtensionManager(
        namespace=ENTRY_POINT_GROUP,
        names=list(names),
        invoke_on_load=False,
        name_order=True,
        on_missing_entrypoints_callback=on_missing,
        on_load_failure_callback=on_failure,
    )
    if missing:
        installed = ", ".join(sorted(installed_plugins())) or "none"
        raise PluginError(
            f"unknown plugin(s): {', '.join(sorted(missing))} (CHEESESHOP_PLUGINS); "
            f"installed: {installed}"
        )
    if failures:
        raise PluginError("plugin(s) failed to load: " + "; ".join(failures))
    # stevedore caches entry points without their distribution; ask importlib for it.
    dists = {ep.name: ep.dist for ep in entry_points(group=ENTRY_POINT_GROUP)}
    loaded = []
    for extension in manager:
        dist = dists.get(extension.name)
        loaded.append((extension.name, extension.plugin, dist.version if dist else None))
    return loaded


def load_plugins(settings: Settings, *, extra: Sequence[tuple[str, object]] = ()) -> Hooks:
    """Build the plugin manager for ``settings``.

    ``extra`` registers further (name, plugin) pairs directly, as tests and embedding
    applications do. Raises :class:`PluginError` naming what is wrong.
    """
    pm = pluggy.PluginManager("cheeseshop")
    pm.add_hookspecs(hookspecs)
    blocked = set(settings.blocked_plugins)
    for name in blocked:
        pm.set_blocked(name)
    defaults = [name for name in DEFAULT_PLUGINS if name not in blocked]
    for name in defaults:
        pm.register(importlib.import_module(DEFAULT_PLUGINS[name]), name=name)
    wanted = [name for name in dict.fromkeys(settings.plugins) if name not in blocked]
    versions: dict[str, str | None] = {}
    for name, plugin, version in [*_load_named(wanted), *((n, p, None) for n, p in extra)]:
        if pm.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r}")
        pm.register(plugin, name=name)
        versions[name] = version
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        raise PluginError(f"plugin {error.plugin!r} implements an unknown hook: {error}") from None
    hooks = Hooks(pm, defaults=set(defaults), versions=versions)
    hooks.check_single_slots()
    return hooks


#: How many sets of keys :meth:`Hooks.response_headers` remembers before starting afresh.
_RESPONSE_HEADERS_REMEMBERED = 50_000


class Hooks:
    """The typed facade the core calls; one method per hook."""

    def __init__(
        self,
        pm: pluggy.PluginManager,
        *,
        defaults: set[str],
        versions: dict[str, str | None] | None = None,
    ) -> None:
        self.pm = pm
        self.defaults = defaults
        self.versions = versions or {}
        self._response_headers: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}

    def _impls(self, hook: str) -> list[pluggy.HookImpl]:
        return getattr(self.pm.hook, hook).get_hookimpls()

    def check_single_slots(self) -> None:
        """Refuse two non-default plugins providing the same single slot."""
        for hook in SINGLE_SLOTS:
            providers = [i.plugin_name for i in self._impls(hook) if i.plugin_name not in self.defaults]
            if len(providers) > 1:
                slot = hook.removeprefix("cheeseshop_")
                raise PluginError(
                    f"plugins {' and '.join(sorted(providers))} both provide {slot}; "
                    "enable only one of them"
                )

    # -- wiring -------------------------------------------------------------------------

    def apply_settings(self, settings: Settings) -> Settings:
        """Validate each plugin's settings section; return settings carrying them."""
        models: dict[str, type[PluginSettings]] = {}
        for impl in self._impls("cheeseshop_settings"):
            model = impl.function()
            if model is not None:
                models[impl.plugin_name] = model
        raw = settings.sections.get("__raw__", {})
        known = set(models) | set(installed_plugins()) | set(DEFAULT_PLUGINS)
        strays = sorted(set(raw) - known)
        if strays:
            raise PluginError(
                f"settings section(s) {', '.join(strays)} belong to no installed plugin "
                "(a misspelt plugin name?)"
            )
        return with_plugin_sections(settings, models)

    def configure(self, app: Quart, settings: Settings) -> None:
        """Let every plugin wire itself into the web application."""
        self.pm.hook.cheeseshop_configure(app=app, settings=settings)

    # -- providers ----------------------------------------------------------------------

    def file_storage(self, settings: Settings) -> FileStorage:
        """The file storage of the first plugin that provides one."""
        storage = self.pm.hook.cheeseshop_file_storage(settings=settings)
        if storage is None:
            raise PluginError("no plugin provides file storage (is local_storage blocked?)")
        return storage

    def email_sender(self, settings: Settings) -> EmailSender | None:
        """The e-mail sender of the first plugin that provides one.

        None when none does (the default ``email`` plugin is blocked): e-mail is then off.
        """
        return self.pm.hook.cheeseshop_email_sender(settings=settings)

    def event_dispatcher(self, settings: Settings) -> EventDispatcher:
        """The event dispatcher of the first plugin that provides one."""
        dispatcher = self.pm.hook.cheeseshop_event_dispatcher(settings=settings)
        if dispatcher is None:
            raise PluginError("no plugin provides event dispatch (is embedded_outbox blocked?)")
        return dispatcher

    # -- upload -------------------------------------------------------------------------

    @property
    def validates_uploads(self) -> bool:
        """Whether any plugin implements ``cheeseshop_validate_upload`` (when none does,
        an upload need not build a candidate, nor write its file out for the path)."""
        return bool(self._impls("cheeseshop_validate_upload"))

    def validate_upload(self, candidate: UploadCandidate, settings: Settings) -> None:
        """Run every plugin's upload check; the first ``UploadRejected`` propagates."""
        self.pm.hook.cheeseshop_validate_upload(candidate=candidate, settings=settings)

    def render_description(self, html: str, release: DescribedRelease, settings: Settings) -> str:
        """Pass rendered HTML through every implementation, in pluggy's call order."""
        available = {"html": html, "release": release, "settings": settings}
        for impl in reversed(self._impls("cheeseshop_render_description")):
            available["html"] = html
            result = impl.function(**{name: available[name] for name in impl.argnames})
            if result is not None:
                html = result
        return html

    # -- responses ----------------------------------------------------------------------

    def response_headers(self, keys: tuple[str, ...], settings: Settings) -> tuple[tuple[str, str], ...]:
        """The headers plugins add to a cacheable response tagged with ``keys``.

        Remembered per set of keys (the hook's answer depends on nothing else, and
        ``settings`` are the same for the life of the process), so a cache hit costs one
        dictionary lookup. Later plugins' values win on a clash.
        """
        known = self._response_headers.get(keys)
        if known is not None:
            return known
        merged: dict[str, str] = {}
        if self._impls("cheeseshop_response_headers"):
            # pluggy calls the last registered first; apply in registration order.
            for answer in reversed(
                self.pm.hook.cheeseshop_response_headers(keys=keys, settings=settings)
            ):
                merged.update(answer or {})
        headers = tuple(merged.items())
        if len(self._response_headers) >= _RESPONSE_HEADERS_REMEMBERED:
            self._response_headers.clear()
        self._response_headers[keys] = headers
        return headers

    def is_enabled(self, name: str) -> bool:
        """Whether the plugin ``name`` (a default or a named one) is loaded."""
        return self.pm.get_plugin(name) is not None

    # -- events (called by the outbox only) ---------------------------------------------

    def receiver_names(self, hook: str) -> list[str]:
        """Names of the plugins implementing the event hook."""
        return [impl.plugin_name for impl in self._impls(hook)]

    def receivers(self, hook: str) -> list[tuple[str, Callable[..., Any], tuple[str, ...]]]:
        """(plugin name, function, argument names) of each implementation of an event hook.

        The outbox calls each one separately so that it can record and retry deliveries
        plugin by plugin.
        """
        return [
            (impl.plugin_name, impl.function, tuple(impl.argnames))
            for impl in reversed(self._impls(hook))
        ]

    # -- tasks --------------------------------------------------------------------------

    def periodic_tasks(self, settings: Settings) -> dict[str, PeriodicTask]:
        """Every plugin's periodic task entries, by name; a name given twice is an error."""
        from cheeseshop.worker.schedule import check_entries

        entries: list[tuple[str, PeriodicTask]] = []
        for impl in reversed(self._impls("cheeseshop_periodic_tasks")):
            # A sequence of PeriodicTask or None; check_entries refuses anything else.
            answer: Any = impl.function(**{name: settings for name in impl.argnames})
            entries += [(impl.plugin_name, entry) for entry in answer or ()]
        try:
            return check_entries(entries)
        except ValueError as error:
            raise PluginError(str(error)) from None

    # -- introspection ------------------------------------------------------------------

    def describe(self) -> list[PluginInfo]:
        """Every registered plugin with the hooks it implements."""
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            module = getattr(plugin, "__name__", type(plugin).__qualname__)
            infos.append(
                PluginInfo(
                    name=name,
                    module=module,
                    version=self.versions.get(name),
                    default=name in self.defaults,
                    hooks=hooks,
                )
            )
        return infos
