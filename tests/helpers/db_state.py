"""Everything a MongoDB database holds, to assert that a command left it exactly as it was."""
from __future__ import annotations

from typing import Any

import bson


def database_state(client: Any, name: str) -> dict[str, Any]:
    """Whether the database exists, and per collection its indexes and documents (BSON bytes in
    ``_id`` order). Looking creates nothing."""
    if name not in client.list_database_names():
        return {"exists": False}
    db = client[name]
    collections = {}
    for collection in sorted(db.list_collection_names()):
        indexes = {key: bson.encode({"i": value}) for key, value in sorted(db[collection].index_information().items())}
        documents = [bson.encode(doc) for doc in db[collection].find().sort("_id", 1)]
        collections[collection] = {"indexes": indexes, "documents": documents}
    return {"exists": True, "collections": collections}
