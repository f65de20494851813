#!/usr/bin/env sh
# The system libraries the napari plugin needs on Debian 12 (and its derivatives), installed when missing:
# Qt's X11 platform plugin (xcb) and, for headless runs (tests, screenshots), the Xvfb display.
# Run as root (CI) it installs them with apt-get; otherwise it prints the command to run.
# Elsewhere (no dpkg: macOS, Windows, other Linux) it does nothing: the Qt wheels bring their own.
set -eu
PACKAGES="libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libxcb-image0 libxcb-randr0
libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 libxkbcommon-x11-0 libx11-xcb1 libfontconfig1
libdbus-1-3 libglib2.0-0 libgl1 libegl1 libgl1-mesa-dri xvfb"

command -v dpkg-query >/dev/null 2>&1 || exit 0
missing=""
for package in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing the system libraries napari's Qt needs:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; then
        echo "apt-get could not install$missing; dessam works without them, napari needs them" >&2
    fi
else
    echo "napari needs system libraries that are missing; install them with:" >&2
    echo "    sudo apt-get install --no-install-recommends$missing" >&2
fi
