// Sender-constrained tokens (DPoP, RFC 9449) for the typed client: a login
// that carries a proof gets tokens bound to this device's key, and each later
// call proves, with a fresh signature, that it comes from the holder of that
// key. A copied token is useless without it. WebCrypto only: the private key
// is made non-extractable, so not even this code can read it out (a CryptoKey
// can be kept in IndexedDB as it is, which the account page does).
import createClient, { type Middleware } from "openapi-fetch";
import type { paths } from "./schema";
import { ProblemError, type Problem, type Session, type TokenPair } from "./sessions";

/** A device's key: the private half for signing, the public half as proofs carry it. */
export interface DPoPKey {
  readonly privateKey: CryptoKey;
  readonly jwk: { readonly kty: "EC"; readonly crv: "P-256"; readonly x: string; readonly y: string };
}

const encoder = new TextEncoder();

function base64url(bytes: ArrayBuffer | Uint8Array): string {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function encodeJson(value: object): string {
  return base64url(encoder.encode(JSON.stringify(value)));
}

/** A new ECDSA P-256 key (ES256) whose private half cannot be exported. */
export async function createDPoPKey(): Promise<DPoPKey> {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", pair.publicKey);
  if (kty !== "EC" || crv !== "P-256" || x === undefined || y === undefined) {
    throw new Error("WebCrypto gave an unexpected public key");
  }
  // Only the public members: a proof's jwk must never carry a private one.
  return { privateKey: pair.privateKey, jwk: { kty, crv, x, y } };
}

/**
 * A proof for one request: `method` as sent, `url` absolute (its query and
 * fragment are left out of htu), and the token the request presents, if any
 * (its SHA-256 goes in ath).
 */
export async function dpopProof(key: DPoPKey, method: string, url: string, accessToken?: string): Promise<string> {
  const htu = new URL(url);
  htu.search = "";
  htu.hash = "";
  const claims: { jti: string; htm: string; htu: string; iat: number; ath?: string } = {
    jti: base64url(crypto.getRandomValues(new Uint8Array(16))),
    htm: method,
    htu: htu.href,
    iat: Math.floor(Date.now() / 1000),
  };
  if (accessToken !== undefined) {
    claims.ath = base64url(await crypto.subtle.digest("SHA-256", encoder.encode(accessToken)));
  }
  const input = `${encodeJson({ typ: "dpop+jwt", alg: "ES256", jwk: key.jwk })}.${encodeJson(claims)}`;
  // WebCrypto's ECDSA signature is already r || s, 64 bytes: the JWS form.
  const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key.privateKey, encoder.encode(input));
  return `${input}.${base64url(signature)}`;
}

/** Signs every request of a client: a fresh proof, and the token (if any) as DPoP. */
export function dpopMiddleware(key: DPoPKey, token?: string): Middleware {
  return {
    async onRequest({ request }) {
      request.headers.set("DPoP", await dpopProof(key, request.method, request.url, token));
      if (token !== undefined) request.headers.set("Authorization", `DPoP ${token}`);
      return request;
    },
  };
}

/** A client for one base URL whose requests are signed by `key`. */
export function connectBound(baseUrl: string, key: DPoPKey, token?: string) {
  const client = createClient<paths>({ baseUrl });
  client.use(dpopMiddleware(key, token));
  return client;
}

function refused(problem: Problem | undefined, status: number): never {
  throw new ProblemError(
    problem ?? { type: "about:blank", title: "Error", status, detail: "", code: "unknown" },
  );
}

/** Sign in with a proof. The pair is bound (token_type "DPoP") when the service binds. */
export async function signInBound(baseUrl: string, key: DPoPKey, username: string, password: string): Promise<TokenPair> {
  const { data, error, response } = await connectBound(baseUrl, key).POST("/api/v1/auth/login", {
    body: { username, password },
  });
  if (data === undefined) refused(error, response.status);
  if (data.token_type !== "DPoP") throw new Error("the service did not bind the tokens (DPoP is off)");
  return data;
}

/** A new pair for a bound refresh token, bound to the same key. */
export async function refreshBound(baseUrl: string, key: DPoPKey, refreshToken: string): Promise<TokenPair> {
  const { data, error, response } = await connectBound(baseUrl, key, refreshToken).POST("/api/v1/auth/refresh");
  if (data === undefined) refused(error, response.status);
  return data;
}

/** The caller's sessions, listed with its bound access token; which are bound. */
export async function boundSessions(baseUrl: string, key: DPoPKey, pair: TokenPair): Promise<string[]> {
  const { data, error, response } = await connectBound(baseUrl, key, pair.access_token).GET("/api/v1/sessions");
  if (data === undefined) refused(error, response.status);
  return data.sessions.map((session: Session) => `${session.id}: ${session.dpop_bound ? "bound to its key" : "bearer"}`);
}
