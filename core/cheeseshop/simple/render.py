"""Render Simple API pages from plain view data. Pure: no database, no request."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from html import escape
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import NamedTuple

__all__ = [
    "API_VERSION",
    "FileView",
    "ProjectLink",
    "ProjectStatusView",
    "project_html",
    "project_json",
    "root_html",
    "root_json",
]

#: The highest Simple API version whose fields every page emits: sizes, versions and
#: upload times (1.1, PEP 700), alternate locations (1.2, PEP 708), provenance (1.3,
#: PEP 740) and project status (1.4, PEP 792).
API_VERSION = "1.4"


@dataclasses.dataclass(frozen=True)
class FileView:
    """One file as the Simple API shows it."""

    filename: str
    url: str
    sha256: str
    requires_python: str | None
    size: int
    upload_time: datetime
    yanked: bool
    yanked_reason: str | None
    metadata_sha256: str | None
    provenance_url: str | None = None


@dataclasses.dataclass(frozen=True)
class ProjectStatusView:
    """PEP 792 status of a project: active, archived, quarantined or deprecated."""

    status: str = "active"
    reason: str | None = None

    def to_json(self) -> dict[str, str]:
        """The ``project-status`` object: the reason only when there is one."""
        return {"status": self.status, **({"reason": self.reason} if self.reason else {})}


class ProjectLink(NamedTuple):
    """One project in the root index (a tuple: the root lists hundreds of thousands)."""

    name: str
    normalized_name: str
    last_serial: int


def _upload_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _yanked(file: FileView) -> bool | str:
    if not file.yanked:
        return False
    return file.yanked_reason or True


def project_json(
    name: str,
    *,
    last_serial: int,
    versions: Sequence[str],
    files: Sequence[FileView],
    status: ProjectStatusView = ProjectStatusView(),
) -> str:
    """PEP 691 JSON for a project page."""
    metadata = lambda f: {"sha256": f.metadata_sha256} if f.metadata_sha256 else False  # noqa: E731
    body = {
        "meta": {"api-version": API_VERSION, "_last-serial": last_serial},
        "name": name,
        "versions": list(versions),
        "alternate-locations": [],
        "project-status": status.to_json(),
        "files": [
            {
                "filename": f.filename,
                "url": f.url,
                "hashes": {"sha256": f.sha256},
                "requires-python": f.requires_python,
                "size": f.size,
                "upload-time": _upload_time(f.upload_time),
                "yanked": _yanked(f),
                "core-metadata": metadata(f),
                "dist-info-metadata": metadata(f),
                "provenance": f.provenance_url,
            }
            for f in files
        ],
    }
    return json.dumps(body, separators=(",", ":"))


def _head(title: str, status: ProjectStatusView | None = None) -> str:
    meta = [f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n']
    if status is not None and status.status != "active":
        meta.append(f'    <meta name="pypi:project-status" content="{escape(status.status)}">\n')
        if status.reason:
            meta.append(f'    <meta name="pypi:project-status-reason" content="{escape(status.reason)}">\n')
    return (
        '<!DOCTYPE html>\n<html>\n  <head>\n    <meta charset="utf-8">\n'
        + "".join(meta)
        + f"    <title>{escape(title)}</title>\n  </head>\n  <body>\n"
    )


def project_html(
    name: str, *, files: Sequence[FileView], status: ProjectStatusView = ProjectStatusView()
) -> str:
    """PEP 503 HTML for a project page: one anchor per file."""
    lines = [_head(f"Links for {name}", status), f"    <h1>Links for {escape(name)}</h1>\n"]
    for f in files:
        attributes = [f'href="{escape(f.url)}#sha256={f.sha256}"']
        if f.requires_python:
            attributes.append(f'data-requires-python="{escape(f.requires_python)}"')
        if f.yanked:
            attributes.append(
                f'data-yanked="{escape(f.yanked_reason)}"' if f.yanked_reason else "data-yanked"
            )
        if f.metadata_sha256:
            # Both spellings: PEP 714 renamed the attribute; older pips read the first.
            attributes.append(f'data-dist-info-metadata="sha256={f.metadata_sha256}"')
            attributes.append(f'data-core-metadata="sha256={f.metadata_sha256}"')
        if f.provenance_url:
            attributes.append(f'data-provenance="{escape(f.provenance_url)}"')
        lines.append(f"    <a {' '.join(attributes)}>{escape(f.filename)}</a><br />\n")
    lines.append("  </body>\n</html>\n")
    return "".join(lines)


def root_json(*, last_serial: int, projects: Sequence[tuple[str, str, int]]) -> str:
    """PEP 691 JSON for the root index; ``projects`` are (name, normalized name, serial).

    Written out piece by piece, the same bytes ``json.dumps`` would give: for hundreds of
    thousands of projects that is several times faster than building a dict for each.
    """
    meta = json.dumps({"api-version": API_VERSION, "_last-serial": last_serial}, separators=(",", ":"))
    items = ",".join(
        f'{{"name":{encode_basestring_ascii(name)},"_last-serial":{int(serial)}}}'
        for name, _, serial in projects
    )
    return f'{{"meta":{meta},"projects":[{items}]}}'


def root_html(*, projects: Sequence[tuple[str, str, int]]) -> str:
    """PEP 503 HTML for the root index; ``projects`` are (name, normalized name, serial)."""
    lines = [_head("Simple index")]
    for name, normalized, _ in projects:
        lines.append(f'    <a href="{escape(normalized)}/">{escape(name)}</a><br />\n')
    lines.append("  </body>\n</html>\n")
    return "".join(lines)
