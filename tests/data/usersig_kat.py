#!/usr/bin/env python3
"""Derives the UserSig known-answer vectors used by src/chat/usersig_tests.rs.

Independent of the Rust code: Python's standard library only (hmac, hashlib, zlib, json, base64),
following docs/chat-api.md ("UserSig (TLSSigAPIv2)") step by step.

    python3 tests/data/usersig_kat.py            # prints the vectors
    python3 tests/data/usersig_kat.py SIG        # decodes and checks a sig made by account-sync

Two layouts are printed because the official libraries differ: Python's json.dumps with ", " / ": "
separators in insertion order and zlib level 6, and a compact, alphabetically sorted layout with zlib
level 9 (the shape Go's encoding/json gives a map). A verifier must accept both.
"""
import base64, hashlib, hmac, json, sys, zlib

KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
SDKAPPID = 1400000000
IDENTIFIER = "administrator"
TIME = 1700000000
EXPIRE = 86400 * 180


def tls_sig(key, identifier, sdkappid, time, expire):
    content = (f"TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\n"
               f"TLS.time:{time}\nTLS.expire:{expire}\n")
    return base64.b64encode(hmac.new(key.encode(), content.encode(), hashlib.sha256).digest()).decode()


def url_safe(b):
    return base64.b64encode(b).decode().replace("+", "*").replace("/", "-").replace("=", "_")


def usersig(doc_bytes, level):
    return url_safe(zlib.compress(doc_bytes, level))


def main():
    if len(sys.argv) > 1:
        raw = base64.b64decode(sys.argv[1].replace("*", "+").replace("-", "/").replace("_", "="))
        doc = json.loads(zlib.decompress(raw))
        want = tls_sig(KEY, doc["TLS.identifier"], doc["TLS.sdkappid"], doc["TLS.time"], doc["TLS.expire"])
        print(json.dumps(doc, sort_keys=True))
        print("valid" if hmac.compare_digest(want, doc["TLS.sig"]) else "INVALID")
        return
    sig = tls_sig(KEY, IDENTIFIER, SDKAPPID, TIME, EXPIRE)
    doc = {"TLS.ver": "2.0", "TLS.identifier": IDENTIFIER, "TLS.sdkappid": SDKAPPID,
           "TLS.expire": EXPIRE, "TLS.time": TIME, "TLS.sig": sig}
    print("TLS.sig        ", sig)
    print("python layout  ", usersig(json.dumps(doc).encode(), 6))
    print("sorted layout  ", usersig(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), 9))
    print("compact layout ", usersig(json.dumps(doc, separators=(",", ":")).encode(), 6))


if __name__ == "__main__":
    main()
