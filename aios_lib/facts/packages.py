"""Installed Debian packages (``dpkg-query``): whether a package is installed, and its version."""
from __future__ import annotations

from .base import Fact


def parse_dpkg_status(text: str | None, rc: int | None) -> str | None:
    """``dpkg-query -W -f='${Status} ${Version}' PKG`` -> the version when the package is installed
    (``install ok installed 6.1.192-3``), else None (unknown package: exit status 1)."""
    text = text or ""
    if rc == 0 and "ok installed" in text:
        return text.split()[-1]
    return None


def package_version(package: str) -> Fact:
    """The installed version of ``package`` on this host, or None."""
    return Fact(name=f"{package} version",
                commands={"status": ("dpkg-query", "-W", "-f=${Status} ${Version}", package)},
                parse=lambda o: parse_dpkg_status(o.get("status"), o.get("status.rc")),
                status=frozenset({"status"}))
