"""What each Lambda function may touch, derived from its code, so its IAM role cannot drift from it.

For a handler module, :func:`derive_access` follows its imports (module-level and lazy, within
``notify_core`` and ``lambdas``) and reads the reachable source:

* the Store tables it names (``tables.PLANS``, ``from notify_core.store.tables import SENDS``, or a
  collection of them: ``tables.USER_ITEMS``, every table the erasure deletes from);
* whether it can write the Store (calls of ``put``/``batch_put``/``update_many``/``delete``/``save_frame``/
  ``upsert_changed``, or a two-argument-or-more ``update(pk, sk, ...)``) or only read it, and whether it
  scans a table (a ``scan()`` call: DynamoDB's ``Scan`` is an action of its own, which ``Query`` does not
  grant; the erasure and the erasure register scan);
* S3: read when it reaches the artefact store, the lake or the S3 adapter, write when it calls
  ``write_bytes``/``put_bytes``/``upload``/``merge``/``write_table``, and the versions of objects (list, read,
  delete one for good) when it calls ``delete_version`` (the erasure: a rewrite alone leaves the old copy);
* SNS when it reaches the delivery channels; Kafka (so the function needs the VPC) when it reaches the
  stream adapters.

It over-approximates (a reachable function may never run for that handler), never under-approximates
what the source can name, so a role is the least the code could need without a test harness per handler.
``notify templates`` renders one role per function from it, and ``--check`` fails when code and roles
diverge.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("notify_core", "lambdas")
STORE_WRITES = frozenset({"put", "batch_put", "update_many", "delete", "save_frame", "upsert_changed", "delete_keys"})
S3_WRITES = frozenset({"write_bytes", "put_bytes", "upload", "merge", "write_table"})
S3_VERSION_DELETES = frozenset({"delete_version"})
# the adapters implement the writes (their calls are not uses): skipped when looking for write calls
ADAPTERS = ("notify_core.store.", "notify_core.recommend.artefacts", "notify_core.stream.", "notify_core.s3_objects")
KEY_VAULT = "notify_core.security.vault"
DYNAMODB_READ = ("dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:DescribeTable")
DYNAMODB_SCAN = ("dynamodb:Scan",)
DYNAMODB_WRITE = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")


@dataclass(frozen=True)
class Access:
    tables: frozenset[str]
    store_writes: bool
    s3_read: bool
    s3_write: bool
    sns: bool
    kafka: bool
    store_scans: bool = False
    s3_versions: bool = False
    modules: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def reaches_keys(self) -> bool:
        """Whether the code reaches the key vault (data keys, signing rings: direct KMS use)."""
        return KEY_VAULT in self.modules

    @property
    def dynamodb_actions(self) -> tuple[str, ...]:
        return DYNAMODB_READ + (DYNAMODB_SCAN if self.store_scans else ()) + (
            DYNAMODB_WRITE if self.store_writes else ())


@cache
def _source(module: str) -> ast.Module | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin)
    if ROOT not in path.parents:
        return None
    return ast.parse(path.read_text(encoding="utf-8"))


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except what sits under ``if TYPE_CHECKING:`` (type-only imports never run)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and ((isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING") or (
                isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(tree: ast.Module, module: str) -> set[str]:
    out: set[str] = set()
    package = module if _is_package(module) else module.rpartition(".")[0]
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                prefix = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{prefix}.{base}" if base else prefix
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in out if name.split(".")[0] in PACKAGES}


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return bool(spec and spec.submodule_search_locations)


def reachable(module: str) -> frozenset[str]:
    """Every notify_core/lambdas module ``module`` can import, directly, transitively or lazily."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        tree = _source(name)
        if tree is None:
            continue
        seen.add(name)
        todo.extend(_imports(tree, name) - seen)
    return frozenset(seen)


def derive_access(module: str) -> Access:
    from notify_core.store import tables

    # a name of one table, or of a collection of them (``tables.USER_ITEMS``: the erasure's, every table
    # that holds users' items); ``ALL_TABLES`` itself names no table a handler uses
    constants: dict[str, frozenset[str]] = {
        name: frozenset([value] if isinstance(value, str) else value) for name, value in vars(tables).items()
        if name.isupper() and name != "ALL_TABLES" and (
            (isinstance(value, str) and value in tables.ALL_TABLES)
            or (isinstance(value, tuple | dict) and value and all(v in tables.ALL_TABLES for v in value)))}
    modules = reachable(module)
    used: set[str] = set()
    store_writes = s3_write = store_scans = s3_versions = False
    for name in modules:
        tree = _source(name)
        assert tree is not None
        for node in _runtime_nodes(tree):
            if isinstance(node, ast.Attribute) and node.attr in constants and isinstance(node.value, ast.Name):
                used |= constants[node.attr]
            elif isinstance(node, ast.ImportFrom) and node.module == "notify_core.store.tables":
                used |= {t for a in node.names if a.name in constants for t in constants[a.name]}
            elif isinstance(node, ast.Call) and not name.startswith(ADAPTERS):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else \
                    node.func.id if isinstance(node.func, ast.Name) else ""
                if called in STORE_WRITES or (called == "update" and len(node.args) >= 2):
                    store_writes = True
                if called in S3_WRITES:
                    s3_write = True
                if called in S3_VERSION_DELETES:
                    s3_versions = True
                if called == "scan" and isinstance(node.func, ast.Attribute):
                    store_scans = True

    def reaches(prefix: str) -> bool:
        return any(m == prefix or m.startswith(prefix + ".") for m in modules)

    s3_read = any(reaches(m) for m in ("notify_core.recommend.artefacts", "notify_core.lake", "notify_core.s3_objects"))
    return Access(tables=frozenset(used), store_writes=store_writes and bool(used), s3_read=s3_read,
                  s3_write=s3_write and s3_read, s3_versions=s3_versions and s3_read,
                  sns=reaches("notify_core.delivery.sns"),
                  kafka=reaches("notify_core.stream.kafka") or reaches("notify_core.stream.factory"),
                  store_scans=store_scans and bool(used), modules=modules)
