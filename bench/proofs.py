"""What checking one DPoP proof costs, and where the time goes.

``python -m bench.proofs``: pre-generates ``--proofs`` proofs per algorithm
(ES256, EdDSA), each with its own ``jti``, and times each check on its own
(median and 95th percentile, in microseconds):

- ``dpop.verify``, one key for every proof (its header is in the key cache),
  and cold: a new key for every proof (header parsed, key built and checked);
- PyJWT's full path: ``jwt.PyJWK(header["jwk"])`` + ``jwt.decode`` + the same
  claim checks and thumbprint;
- the bare signature check in ``cryptography`` (a key built beforehand, the
  signature already in the form it takes): the floor for any verifier.

Signing is not measured.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sessionsvc import dpop
from sessionsvc.dpop_client import DPoPKey

URL = "https://api.example.com/api/v1/sessions"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
MAX_AGE = 60


def timed(check: Callable[[Any], object], inputs: Sequence[Any]) -> tuple[float, float]:
    """Median and 95th percentile, in us, of ``check`` over each input once."""
    check(inputs[0])  # imports, first-call caches
    clock = time.perf_counter_ns
    costs = []
    gc.disable()
    try:
        for item in inputs:
            started = clock()
            check(item)
            costs.append(clock() - started)
    finally:
        gc.enable()
    costs.sort()
    return statistics.median(costs) / 1000, costs[int(len(costs) * 0.95)] / 1000


def ours(proof: str) -> dpop.Proof:
    return dpop.verify(
        proof, method="GET", url=URL, now=time.time(), max_age=MAX_AGE, access_token=TOKEN
    )


def pyjwt_full(proof: str) -> dpop.Proof:
    """The same checks done the usual PyJWT way."""
    header = jwt.get_unverified_header(proof)
    if header.get("typ") != "dpop+jwt" or header.get("alg") not in dpop.ALGORITHMS:
        raise dpop.ProofError("header")
    key = jwt.PyJWK(header["jwk"])
    claims = jwt.decode(
        proof,
        key,
        algorithms=[header["alg"]],
        options={"require": ["iat", "jti"]},
        leeway=dpop.FUTURE_SKEW,
    )
    now = time.time()
    if claims["htm"] != "GET" or dpop.normalise_url(claims["htu"]) != dpop.normalise_url(URL):
        raise dpop.ProofError("htm/htu")
    if not now - MAX_AGE <= claims["iat"] <= now + dpop.FUTURE_SKEW:
        raise dpop.ProofError("iat")
    if claims.get("ath") != dpop.access_token_hash(TOKEN):
        raise dpop.ProofError("ath")
    return dpop.Proof(dpop.thumbprint(header["jwk"]), claims["jti"], int(claims["iat"]))


def bare_inputs(public: Any, proofs: Sequence[str]) -> list[tuple[Any, bytes, bytes]]:
    """(public key, signature as cryptography takes it, signed bytes) per proof."""
    found = []
    for proof in proofs:
        head, body, signature = proof.split(".")
        raw = base64.urlsafe_b64decode(signature + "==")
        if isinstance(public, ec.EllipticCurvePublicKey):
            r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
            raw = encode_dss_signature(r, s)
        found.append((public, raw, f"{head}.{body}".encode("ascii")))
    return found


def bare(item: tuple[Any, bytes, bytes]) -> None:
    public, signature, signed = item
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
    else:
        public.verify(signature, signed)


def measure(alg: str, count: int, cold: int) -> dict[str, tuple[float, float]]:
    private = (
        ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else Ed25519PrivateKey.generate()
    )
    key = DPoPKey.from_private_key(private)
    warm = [key.proof("GET", URL, access_token=TOKEN) for _ in range(count)]
    keys = [DPoPKey.generate(alg) for _ in range(cold)]
    fresh = [k.proof("GET", URL, access_token=TOKEN) for k in keys]
    for proof in (warm[0], fresh[0]):  # every path accepts them
        assert ours(proof) == pyjwt_full(proof)
    figures = {"dpop.verify, cold key": timed(ours, fresh)}
    figures["dpop.verify, cached key"] = timed(ours, warm)
    figures["PyJWT PyJWK + jwt.decode"] = timed(pyjwt_full, warm)
    figures["bare signature check"] = timed(bare, bare_inputs(private.public_key(), warm))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.proofs", description=__doc__)
    parser.add_argument("--proofs", type=int, default=20_000)
    parser.add_argument("--cold", type=int, default=4_000, help="proofs by new keys")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    results = {}
    for alg in dpop.ALGORITHMS:
        figures = measure(alg, args.proofs, args.cold)
        results[alg] = figures
        floor = figures["bare signature check"][0]
        print(f"{alg} ({args.proofs} proofs, {args.cold} by new keys):")
        width = max(len(name) for name in figures)
        for name, (median, p95) in figures.items():
            print(
                f"  {name:<{width}}  median {median:6.1f} us  p95 {p95:6.1f} us"
                f"  ({median / floor:.2f}x the bare check)"
            )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
