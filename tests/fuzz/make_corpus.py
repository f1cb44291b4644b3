"""Writes the regression corpus: inputs that once crashed or misbehaved.

``python -m tests.fuzz.make_corpus`` rewrites ``corpus/``. Each entry is replayed by
``test_regression_corpus`` (Avro values, ``*.bin``) or ``test_json_corpus`` (check
command lines, ``*.jsonl``). New crashes found by a long fuzz run or by the atheris
harness (``tests/fuzz/atheris_decode.py``, which writes ``crash-*`` files) are copied
into ``corpus/`` under a descriptive name.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fuzz.hostile import CORPUS, encode, sample_records, zigzag_varint
from tests.spec_examples import minimal_event


def _order(**changes: Any) -> dict[str, Any]:
    return {**sample_records()[(2, "order")], **changes}


def avro_entries() -> dict[str, bytes]:
    marker = encode(2, "order", _order(orderId="QQQQ"), confluent=False)
    at = marker.index(b"QQQQ")
    bad_items = [{"productId": "p", "productName": "", "unitPrice": 1.0}] * 300
    item = {"productId": "p", "productName": "n", "unitPrice": 1.0}
    return {
        # 300 rejected items made a 15 kB message (5,000 made 250 kB): now 10 and a count.
        "avro-300-invalid-items.bin": encode(2, "order", _order(orderedItems=bad_items), False),
        # A 20,000-character value was repeated whole in the message.
        "avro-huge-currency.bin": encode(2, "order", _order(currency="U" * 20_000), False),
        # 2^40 passed as an integer; GraphQL Int is 32-bit, so only the API refused it.
        "avro-quantity-2p40.bin": encode(
            2, "order", _order(orderedItems=[{**item, "itemQuantity": 2**40}]), True
        ),
        # Two lines of 2^31-1 units of one product summed beyond GraphQL Int when merged.
        "avro-merged-quantity-overflow.bin": encode(
            2, "order", _order(orderedItems=[{**item, "itemQuantity": 2**31 - 1}] * 2), False
        ),
        "avro-invalid-utf8.bin": marker[:at] + b"\xed\xa0\x80Q" + marker[at + 4 :],
        "avro-string-claims-2p31.bin": marker[: at - 1] + zigzag_varint(2**31) + b"QQ",
        "avro-nan-order-value.bin": encode(2, "order", _order(orderValue=float("nan")), True),
    }


def json_entries() -> dict[str, str]:
    base = minimal_event("order")
    text = json.dumps(base)
    return {
        # json.loads raised RecursionError / ValueError: the check command crashed.
        "json-deep-nesting.jsonl": "[" * 5_000 + "]" * 5_000,
        "json-deep-object.jsonl": '{"a":' * 5_000 + "1" + "}" * 5_000,
        "json-5000-digit-number.jsonl": text.replace(
            '"orderId"', '"orderValue": 1' + "0" * 5_000 + ', "orderId"'
        ),
        # An unpaired surrogate got pydantic's raw message.
        "json-unpaired-surrogate.jsonl": text.replace('"sess-1"', '"\\ud800"'),
        # A 4,000-digit quantity was accepted as valid.
        "json-huge-quantity.jsonl": json.dumps(
            {**base, "orderedItems": [{"productId": "p", "productName": "n", "unitPrice": 1}]}
        ).replace('"unitPrice": 1', '"unitPrice": 1, "itemQuantity": ' + "9" * 4_000),
        "json-signal-type-object.jsonl": json.dumps({**base, "signalType": {"$ne": 1}}),
        # Unknown keys are user-chosen: a 2,345-character key made a 4 kB field path.
        "json-long-unknown-keys.jsonl": json.dumps(
            {
                **minimal_event("identification"),
                "identifiableAttributes": {"x" * 172: None, "x" * 2_345: None},
                "y" * 1_374: [],
            }
        ),
    }


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for name, value in avro_entries().items():
        (CORPUS / name).write_bytes(value)
    for name, line in json_entries().items():
        (CORPUS / name).write_text(line + "\n", encoding="utf-8")
    print(f"wrote {len(avro_entries()) + len(json_entries())} files to {CORPUS}")


if __name__ == "__main__":
    main()
