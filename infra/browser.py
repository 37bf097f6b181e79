"""Headless Chromium for the screenshot script and the browser test."""

from __future__ import annotations

#: Debian's package; Playwright's own browser download needs the internet.
CHROMIUM = "/usr/bin/chromium"
#: Flags for Chromium run as root on a machine without outside network access: without the
#: background-networking ones it keeps trying to reach Google's hosts.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
