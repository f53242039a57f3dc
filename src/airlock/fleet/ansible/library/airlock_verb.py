"""Ansible module: run one airlock verb on the node, with check and diff modes.

It runs on the node under the node's python3 (airlock may not be importable there yet), so it
uses only the standard library and Ansible's module utilities. `changed` is what airlock says:
a node verb's plan (`--dry-run` under check mode, applied otherwise), `load`'s own `changed`,
and for one-shot verbs (`cluster init`, `cluster join`) the `creates` guard, as Ansible's
`command` has it. Under check mode a verb without `--dry-run` is not run; the module says
what it would do.
"""

from __future__ import annotations

import json
import os
import tarfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: airlock_verb
short_description: run an airlock verb on the node (check and diff modes honoured)
options:
  airlock: {type: path, required: true, description: the node's airlock executable}
  verb: {type: list, elements: str, required: true, description: e.g. [node, prepare]}
  args: {type: list, elements: str, default: [], description: the verb's arguments}
  kind: {type: str, choices: [node, load, oneshot, app], required: true}
  creates: {type: path, description: a one-shot verb is done when this path exists}
  bundle: {type: path, description: for load, the bundle's first file (airlock.json leads it)}
  store: {type: path, description: for load, the node's store}
  unless: {type: list, elements: str, description: a command whose success means done (read-only)}
  needs: {type: path, description: what an earlier task makes (check mode runs on without it)}
"""


def _plan_lines(plan: dict[str, Any]) -> list[str]:
    out = []
    for change in plan.get("changes") or []:
        out.append(f"{change.get('resource')}: {change.get('msg')}")
        diff = change.get("diff")
        if diff:
            out += ["    " + ln for ln in str(diff).splitlines()]
    return out


def _first_member(bundle: str) -> bytes | None:
    """airlock.json, the bundle's first member (None when it cannot be read); the first
    volume of a split bundle starts with it too."""
    try:
        with tarfile.open(bundle, "r|") as tar:
            member = tar.next()
            if member is None or member.name != "airlock.json" or member.size > 64 << 20:
                return None
            fh = tar.extractfile(member)
            return fh.read() if fh else None
    except (OSError, tarfile.TarError):
        return None


def _loaded(bundle: str, store: str) -> bool:
    """Whether the store already records this very airlock.json (load changes nothing then)."""
    data = _first_member(bundle)
    if data is None:
        return False
    try:
        doc = json.loads(data)
        name, seq = doc["name"], doc["sequence"]
    except (ValueError, KeyError, TypeError):
        return False
    record = os.path.join(store, "airlock", "bundles", f"{name}.{seq}.json")
    try:
        with open(record, "rb") as fh:
            return fh.read() == data
    except OSError:
        return False


def _run(module: AnsibleModule, argv: list[str]) -> dict[str, Any]:
    rc, out, err = module.run_command(argv, environ_update={"NO_COLOR": "1"})
    try:
        doc = json.loads(out) if out.strip() else {}
    except ValueError:
        doc = {}
    if rc != 0:
        error = doc.get("error") or {}
        message = error.get("message") or (err or out).strip()[-2000:]
        hint = error.get("hint")
        module.fail_json(
            msg=f"airlock {' '.join(argv[1:3])}: {message}" + (f" (hint: {hint})" if hint else ""),
            rc=rc,
            cmd=argv,
            error=error,
        )
    return dict(doc)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "airlock": {"type": "path", "required": True},
            "verb": {"type": "list", "elements": "str", "required": True},
            "args": {"type": "list", "elements": "str", "default": []},
            "kind": {
                "type": "str",
                "required": True,
                "choices": ["node", "load", "oneshot", "app"],
            },
            "creates": {"type": "path"},
            "bundle": {"type": "path"},
            "store": {"type": "path"},
            "needs": {"type": "path"},
            "unless": {"type": "list", "elements": "str"},
        },
        supports_check_mode=True,
    )
    p = module.params
    kind = p["kind"]
    if p["creates"] and os.path.exists(p["creates"]):
        module.exit_json(changed=False, msg=f"already done: {p['creates']} exists")
    unless = p["unless"] or []
    if unless and os.access(unless[0], os.X_OK) and module.run_command(unless)[0] == 0:
        module.exit_json(changed=False, msg=f"already done: {' '.join(unless)} succeeded")
    if kind == "load" and p["bundle"] and p["store"] and _loaded(p["bundle"], p["store"]):
        module.exit_json(changed=False, msg="the store already holds this bundle")
    what = " ".join(p["verb"])
    argv = [p["airlock"], *p["verb"], *p["args"], "--json"]
    # check mode before an earlier step ran: what would run, with its arguments
    would = " ".join(["airlock", *p["verb"], *p["args"]])
    if module.check_mode and not os.access(p["airlock"], os.X_OK):
        module.exit_json(changed=True, msg=f"would run once airlock is installed: {would}")
    if p["needs"] and not os.path.exists(p["needs"]):
        if module.check_mode:
            module.exit_json(changed=True, msg=f"would run once {p['needs']} exists: {would}")
        module.fail_json(msg=f"{what}: {p['needs']} is missing (an earlier step did not run)")
    if module.check_mode:
        if kind in ("load",):
            module.exit_json(changed=True, msg="would load the bundle into the store")
        argv.append("--dry-run")
    doc = _run(module, argv)
    result: dict[str, Any] = {"airlock": doc}
    if kind == "node":
        plan = doc.get("plan") or {}
        lines = _plan_lines(plan)
        changed = bool(plan.get("changes"))
        if doc.get("applied") is not None:
            changed = bool((doc.get("applied") or {}).get("changed"))
        if module._diff and lines:
            result["diff"] = {"prepared": "\n".join(lines) + "\n"}
        msg = f"{len(plan.get('changes') or [])} changes" + (
            " planned" if module.check_mode else ""
        )
        module.exit_json(changed=changed, msg=msg, **result)
    if kind == "load":
        module.exit_json(changed=bool(doc.get("changed")), msg="loaded", **result)
    text = str(doc.get("planText") or "")
    if module._diff and text:
        result["diff"] = {"prepared": text}
    module.exit_json(changed=True, msg=str(doc.get("message") or "done"), **result)


if __name__ == "__main__":
    main()
