"""D5 import contract: admin-facing code reaches data only through the router's gate.

Fails if an admin-facing module imports a store (or the server context that holds them),
if any module but the policy module can mint an ``OrgView``, or if an admin op is routed
around the gate.
"""

from __future__ import annotations

import ast
from pathlib import Path

from protocol import catalog
from server import router

ROOT = Path(__file__).resolve().parents[2]
ADMIN_FACING = ["server/services/admin.py", "server/org_view.py"]
FORBIDDEN_PREFIXES = (
    "storage.interfaces",
    "storage.stores",
    "storage.memory",
    "storage.sqlite",
    "storage.consent",
    "server.context",
    "server.app",
    "server.services.messages",
    "server.services.sync",
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_d5_admin_facing_modules_import_no_store() -> None:
    for relative in ADMIN_FACING:
        bad = {
            module
            for module in imported_modules(ROOT / relative)
            if module.startswith(FORBIDDEN_PREFIXES)
        }
        assert not bad, f"{relative} imports {sorted(bad)}"


def test_d5_only_the_policy_module_mints_org_views() -> None:
    allowed = {ROOT / "server/policy.py", ROOT / "server/org_view.py"}
    for path in sorted((ROOT / "server").rglob("*.py")):
        if path in allowed:
            continue
        assert "_MINT" not in path.read_text(), f"{path.relative_to(ROOT)} touches _MINT"


def test_d5_every_admin_op_goes_through_the_gate() -> None:
    admin_ops = [
        cls for cls in catalog.RESULT_TYPES if cls.__struct_config__.tag.startswith("admin.")
    ]
    assert admin_ops, "no admin ops found"
    for cls in admin_ops:
        assert cls in router.ADMIN_HANDLERS, f"{cls.__name__} bypasses the policy gate"
        handler, permission = router.ADMIN_HANDLERS[cls]
        assert handler.__module__ == "server.services.admin"
        assert permission in {"members", "audit", "export", "search", "moderate", "admins"}


def test_d5_the_contract_test_would_notice_a_store_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from storage.sqlite.cross import SqliteCrossDomainStore\n")
    assert any(m.startswith(FORBIDDEN_PREFIXES) for m in imported_modules(bad))
