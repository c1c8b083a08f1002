"""The embedded SQLite backend of the store interfaces (the default).

``writer.py`` runs every write of a database on one thread with group commit; ``readers.py``
reads on a small pool of connections; ``migrations.py`` versions each domain's schema;
``personal.py`` and ``cross.py`` implement the stores; ``stores.py`` opens them all.
"""

from storage.sqlite.migrations import SchemaError, SchemaTooNew
from storage.sqlite.stores import open_sqlite_stores

__all__ = ["SchemaError", "SchemaTooNew", "open_sqlite_stores"]
