"""The trust policy: which keys a registry or repository must be signed with, and what happens if it is not.

    {
      "default": {"mode": "off"},
      "rules": [
        {"scope": "registry.example.com/acme", "mode": "enforce", "keys": ["acme.pub"]},
        {"scope": "127.0.0.1:5000", "mode": "warn", "keys": ["/etc/wasm-oci/dev.pub"]}
      ]
    }

A rule's `scope` is a registry host[:port] or host/repository prefix, matched on whole path
components; the longest matching scope wins, else `default`. Modes: enforce (no valid signature
by one of the keys: refuse), warn (say so and go on), off. Key paths are relative to the file.
Fail-closed choices: a policy file that exists but cannot be used is an error, never ignored; a
file without `default` rejects what no rule covers. With no policy file at all nothing is
required (as docker and containerd do); an explicit --verify-key always enforces.
Local stores and oci: layouts are not checked: their content was checked when it was pulled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from wasm_oci.errors import MalformedContent, TrustConfigError
from wasm_oci.oci import documents
from wasm_oci.oci.reference import Reference, RegistryReference

if TYPE_CHECKING:
    from wasm_oci.signing.keys import PublicKey

Mode = Literal["enforce", "warn", "off"]
SYSTEM_POLICY = Path("/etc/wasm-oci/policy.json")
MAX_POLICY = 1 << 20


@dataclass(frozen=True)
class Rule:
    scope: str
    mode: Mode
    keys: tuple[PublicKey, ...] = ()

    def covers(self, name: str) -> bool:
        return name == self.scope or name.startswith(self.scope + "/")


@dataclass(frozen=True)
class Policy:
    source: str  # the file, or why there is none
    rules: tuple[Rule, ...]
    default: Rule

    def rule_for(self, ref: Reference) -> Rule:
        if not isinstance(ref, RegistryReference):
            return Rule("local store", "off")
        name = f"{ref.registry}/{ref.repository}"
        matching = [rule for rule in self.rules if rule.covers(name)]
        return max(matching, key=lambda rule: len(rule.scope)) if matching else self.default


NO_POLICY = Policy("no trust policy file", (), Rule("default", "off"))


def locations() -> list[Path]:
    """Where a policy is looked for: $WASM_OCI_POLICY; else $WASM_OCI_HOME/policy.json; else the user's, then the system's."""
    if explicit := os.environ.get("WASM_OCI_POLICY"):
        return [Path(explicit)]
    if home := os.environ.get("WASM_OCI_HOME"):
        return [Path(home) / "policy.json"]
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [Path(config) / "wasm-oci" / "policy.json", SYSTEM_POLICY]


def _rule(entry: Any, where: str, base: Path, scope: str) -> Rule:
    if not isinstance(entry, dict):
        raise TrustConfigError(f"{where}: expected an object with mode and keys")
    unknown = set(entry) - {"scope", "mode", "keys"}
    if unknown:
        raise TrustConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    mode = entry.get("mode")
    if mode not in get_args(Mode):
        raise TrustConfigError(f"{where}: mode must be enforce, warn or off, not {str(mode)[:40]!r}")
    paths = entry.get("keys", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise TrustConfigError(f"{where}: keys must be a list of public-key file paths")
    try:
        from wasm_oci.signing.keys import load_public  # cryptography: only when a policy names keys

        return Rule(scope, cast(Mode, mode), tuple(load_public(base / p) for p in paths))
    except TrustConfigError as exc:
        raise TrustConfigError(f"{where}: {exc}") from None


def parse(doc: Any, source: Path) -> Policy:
    if not isinstance(doc, dict) or set(doc) - {"default", "rules"}:
        raise TrustConfigError(f"{source}: a policy is an object with `default` and `rules`")
    base = source.parent
    if not isinstance(doc.get("rules", []), list):
        raise TrustConfigError(f"{source}: `rules` must be a list")
    rules = []
    for n, entry in enumerate(doc.get("rules", []), 1):
        scope = entry.get("scope") if isinstance(entry, dict) else None
        if not isinstance(scope, str) or not scope.strip("/") or scope != scope.strip("/"):
            raise TrustConfigError(f"{source}: rule {n} needs a scope: a registry host or host/repository prefix")
        rules.append(_rule(entry, f"{source}: rule {n} ({scope})", base, scope))
    default = _rule(doc["default"], f"{source}: default", base, "default") if "default" in doc else Rule("default", "enforce")
    return Policy(str(source), tuple(rules), default)


def load(path: Path | None = None) -> Policy:
    """The policy in force; NO_POLICY when no file exists (an explicitly named one must)."""
    if path is None:
        candidates = locations()
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            if os.environ.get("WASM_OCI_POLICY"):
                raise TrustConfigError(f"WASM_OCI_POLICY names {candidates[0]}, which does not exist")
            return NO_POLICY
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_POLICY + 1)
    except FileNotFoundError:
        raise TrustConfigError(f"trust policy {path} does not exist") from None
    except OSError as exc:
        raise TrustConfigError(f"cannot read trust policy {path}: {exc.strerror}") from None
    try:
        doc = documents.load(data, f"trust policy {path}", MAX_POLICY)
    except MalformedContent as exc:
        raise TrustConfigError(str(exc)) from None
    return parse(doc, path)
