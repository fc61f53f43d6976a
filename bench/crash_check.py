#!/usr/bin/env python3
"""Checks a kill -9 run (bench/crash-run.sh): every answered call has exactly one case.

Inputs: the Call-IDs the callers saw answered (200 OK), the intake sink's Idempotency-Key log
and bodies, ivrd's storage (cases still in outbox/pending or outbox/dead) and the case schema.
Prints the figures; exits 1 when an answered call has no case or more than one, a case fails the
schema, or a case's key never reached the receiver. Needs python3-jsonschema.

Usage: crash_check.py ANSWERED_FILE KEYS_FILE BODIES_DIR STORAGE_DIR SCHEMA
"""
import collections
import glob
import json
import os
import sys

import jsonschema


def main():
    answered_file, keys_file, bodies_dir, storage, schema_path = sys.argv[1:6]
    answered = {l.strip() for l in open(answered_file) if l.strip()}
    posts = [l.strip() for l in open(keys_file) if l.strip()]
    per_key = collections.Counter(posts)
    validator = jsonschema.Draft202012Validator(json.load(open(schema_path)))

    cases = {}  # case_id -> (where, document)
    for path in glob.glob(os.path.join(bodies_dir, "*.json")):
        doc = json.load(open(path))
        cases[doc["case_id"]] = ("delivered", doc)
    for sub in ("pending", "dead"):
        for path in glob.glob(os.path.join(storage, "outbox", sub, "*.json")):
            if path.endswith(".meta.json"):
                continue
            doc = json.load(open(path))
            cases.setdefault(doc["case_id"], (sub, doc))

    invalid = []
    by_call = collections.defaultdict(list)
    reasons = collections.Counter()
    for case_id, (_, doc) in cases.items():
        errors = [e.message for e in validator.iter_errors(doc)]
        if errors:
            invalid.append((case_id, errors[:3]))
        by_call[doc["call_id"]].append(case_id)
        reasons[doc.get("hangup", {}).get("reason", "?")] += 1

    missing = sorted(c for c in answered if c not in by_call)
    several = {c: ids for c, ids in by_call.items() if len(ids) > 1}
    unanswered_with_case = sorted(c for c in by_call if c not in answered)
    not_delivered = sorted(k for k in cases if k not in per_key)
    duplicated = {k: n for k, n in per_key.items() if n > 1}
    where = collections.Counter(w for w, _ in cases.values())

    print(f"answered calls (200 OK seen by the caller): {len(answered)}")
    print(f"cases: {len(cases)} ({', '.join(f'{w} {n}' for w, n in sorted(where.items()))})")
    print(f"hang-up reasons: {dict(sorted(reasons.items()))}")
    print(f"answered calls without a case: {len(missing)} {missing[:5]}")
    print(f"calls with more than one case: {len(several)} {list(several.items())[:3]}")
    print(f"cases of calls the caller never saw answered: {len(unanswered_with_case)} {unanswered_with_case[:5]}")
    print(f"schema-invalid cases: {len(invalid)} {invalid[:3]}")
    print(f"POSTs received: {len(posts)}, distinct keys: {len(per_key)}, "
          f"keys POSTed more than once: {len(duplicated)} (extra POSTs {sum(duplicated.values()) - len(duplicated)})")
    print(f"cases whose key never reached the receiver: {len(not_delivered)} {not_delivered[:5]}")
    ok = not missing and not several and not invalid and not not_delivered
    print("RESULT:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
