"""Which packages a lab node gives up before `node install` brings them from the bundle: the
ones asked for always, their libraries only where nothing else on the node needs them."""

from __future__ import annotations

from airlock_lab.node import _DPKG_FORMAT, DpkgEntry, parse_dpkg_query, removable_packages


def entry(depends: str = "", provides: str = "", essential: bool = False) -> DpkgEntry:
    return DpkgEntry("1", frozenset(depends.split()), frozenset(provides.split()), essential)


INSTALLED = {
    "socat": entry("libwrap0 libssl3"),
    "libwrap0": entry("libnsl2"),
    "libnsl2": entry(),
    "libssl3": entry(),
    "python3": entry("libssl3"),  # the node's own base needs libssl3: it stays
    "iptables": entry("libxtables12 libnftnl11"),
    "libxtables12": entry(),
    "libnftnl11": entry(),
    "iproute2": entry("libxtables12"),
    "cni-plugins": entry("iptables"),  # a package of the host that wants iptables
    "mawk": entry(provides="awk", essential=True),
    "tool": entry("awk"),
}
CLOSURE = ["socat", "libwrap0", "libnsl2", "libssl3", "iptables", "libxtables12", "libnftnl11"]


def test_asked_for_always_go_their_libraries_only_when_nothing_else_needs_them() -> None:
    removed = removable_packages(CLOSURE, INSTALLED, always=["socat", "iptables"])
    assert removed == ["iptables", "libnftnl11", "libnsl2", "libwrap0", "socat"]


def test_without_always_a_package_another_needs_stays() -> None:
    assert "iptables" not in removable_packages(CLOSURE, INSTALLED)


def test_virtual_dependencies_and_essential_packages_keep_theirs() -> None:
    assert removable_packages(["mawk"], INSTALLED) == []
    assert removable_packages(["mawk"], INSTALLED, always=["mawk"]) == []  # essential
    assert removable_packages(["not-installed"], INSTALLED, always=["not-installed"]) == []


def test_a_kept_package_keeps_what_it_needs() -> None:
    installed = {**INSTALLED, "python3": entry("libssl3 libwrap0")}  # libwrap0, libnsl2 stay
    # iptables stays (cni-plugins needs it), and with it libnftnl11
    assert removable_packages(CLOSURE, installed, always=["socat"]) == ["socat"]


def test_dpkg_query_lines_parsed_installed_only() -> None:
    assert "${Pre-Depends}, ${Depends}" in _DPKG_FORMAT
    text = (
        "socat\tii \t1.7.4-2\tno\t, libc6 (>= 2.34), libwrap0 (>= 7.6-4~) | libfoo:any\t\n"
        "iptables\trc \t1.8.9-2\tno\t, libc6\t\n"
        "mawk\tii \t1.3.4\tyes\tlibc6 (>= 2.29), \tawk\n"
    )
    parsed = parse_dpkg_query(text)
    assert set(parsed) == {"socat", "mawk"}
    assert parsed["socat"].depends == {"libc6", "libwrap0", "libfoo"}
    assert parsed["mawk"].essential and parsed["mawk"].provides == {"awk"}
