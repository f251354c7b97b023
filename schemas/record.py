"""A record type declared once, from which every other form is derived.

A :class:`RecordSchema` is an ordered list of :class:`Field`. The Arrow
schema written to Parquet and the JSON Schema for incoming JSON both come from
it, so no field list is ever typed twice.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import pyarrow as pa

# Arrow types used by the records, named once so the field declarations read
# like a table.
UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Field:
    """One column.

    Attributes:
        name: the column name in Parquet and in the in-flight dict.
        type: its Arrow type.
        doc: what it means (it becomes the Parquet field's description).
        nullable: whether a row may carry no value.
        json_names: the keys an incoming JSON record may use for this field,
            first one preferred; empty when the field is computed by newsloom.
        json_type: the JSON Schema type(s) accepted for those keys.
    """

    name: str
    type: pa.DataType
    doc: str
    nullable: bool = True
    json_names: Tuple[str, ...] = ()
    json_type: Tuple[str, ...] = ("string", "null")


class RecordSchema:
    """An ordered set of fields with a name and a version."""

    def __init__(self, name: str, version: int, fields: List[Field]):
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: duplicate field names in {names}")
        self.name = name
        self.version = version
        self.fields = fields
        self.by_name = {f.name: f for f in fields}

    @property
    def names(self) -> List[str]:
        return [f.name for f in self.fields]

    def arrow_schema(self, drop: Tuple[str, ...] = ()) -> pa.Schema:
        """The Arrow schema, without the columns in ``drop`` (partition keys)."""
        return pa.schema(
            [pa.field(f.name, f.type, nullable=f.nullable,
                      metadata={"description": f.doc})
             for f in self.fields if f.name not in drop],
            metadata={"newsloom.record": self.name,
                      "newsloom.schema_version": str(self.version)})

    def json_schema(self, required_any_of: Tuple[str, ...] = ()) -> Dict[str, Any]:
        """JSON Schema (draft 2020-12) of an incoming JSON record.

        Args:
            required_any_of: field names of which at least one JSON key must be
                present (e.g. the body, given as ``body`` or ``text``).
        """
        properties: Dict[str, Any] = {}
        for f in self.fields:
            for key in f.json_names:
                properties[key] = {"type": list(f.json_type), "description": f.doc}
        schema: Dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"newsloom incoming {self.name} (v{self.version})",
            "type": "object",
            "properties": properties,
            "additionalProperties": True,
        }
        if required_any_of:
            keys = [k for n in required_any_of for k in self.by_name[n].json_names]
            schema["anyOf"] = [{"required": [k]} for k in keys]
        return schema

    def json_value(self, record: Dict[str, Any], name: str) -> Optional[Any]:
        """The value of field ``name`` in an incoming JSON object, by any of its keys."""
        for key in self.by_name[name].json_names:
            if record.get(key) is not None:
                return record[key]
        return None
