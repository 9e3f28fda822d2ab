"""``export RUN`` names a run by scan_id, -1 or uid prefix, even an all-digit prefix."""

import pytest

from beamline_ls.runfile.export import find_run

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core


class FakeCatalog(dict):
    """Indexing like the bluesky catalog: int scan_id / negative index, or uid prefix."""

    def __getitem__(self, key):
        if key in self:
            return dict.__getitem__(self, key)
        if isinstance(key, str):
            if len(key) < 5:  # as bluesky-tiled-plugins' catalog refuses short prefixes
                raise ValueError(f"Partial uid {key!r} is too short.")
            for uid in self:
                if isinstance(uid, str) and uid.startswith(key):
                    return dict.__getitem__(self, uid)
        raise KeyError(key)


def test_an_all_digit_uid_prefix_is_found_when_no_scan_id_matches():
    cat = FakeCatalog({"15029497-aaaa": "by uid", 3: "scan 3", -1: "latest"})
    assert find_run(cat, "15029497") == "by uid"
    assert find_run(cat, "3") == "scan 3"
    assert find_run(cat, "-1") == "latest"
    with pytest.raises(LookupError, match="no run '99'"):
        find_run(cat, "99")


def test_a_uid_prefix_too_short_says_so():
    cat = FakeCatalog({"15029497-aaaa": "by uid"})
    with pytest.raises(LookupError, match=r"no run '1502' .*: Partial uid '1502' is too short"):
        find_run(cat, "1502")
