"""Camera ids parsed from the image file names of the source Re-ID datasets (-1 when unknown)."""

from __future__ import annotations

import re

_MARKET = re.compile(r"_c(\d+)s\d")  # Market-1501: 0002_c1s1_000451_03.jpg
_MSMT17 = re.compile(r"(?:^|/)\d+_\d+_(\d+)_")  # MSMT17: 0001_000_01_0303morning_0008_0.jpg
_RSTP = re.compile(r"_c(\d+)_")  # RSTPReid: 0000_c5_0022.jpg


def cuhk_pedes_camera(path: str) -> int:
    """CUHK-PEDES: Market images carry cN, VIPeR images live in cam_a/cam_b; others unknown."""
    if path.startswith("cam_a/"):
        return 0
    if path.startswith("cam_b/"):
        return 1
    m = _MARKET.search(path)
    return int(m.group(1)) if m else -1


def msmt17_camera(path: str) -> int:
    """ICFG-PEDES (MSMT17 file names): the third field is the camera."""
    m = _MSMT17.search(path)
    return int(m.group(1)) if m else -1


def rstp_camera(path: str) -> int:
    """RSTPReid: <pid>_c<cam>_<frame>.jpg."""
    m = _RSTP.search(path)
    return int(m.group(1)) if m else -1
