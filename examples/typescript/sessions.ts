// A typed sessionsvc client. The types come from the service's own OpenAPI
// document (`npm run generate` writes schema.d.ts); openapi-fetch makes the
// calls, so a path, parameter or field the service does not have is a
// compile error, not a 404 at run time.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

export type Session = components["schemas"]["Session"];
export type SessionEvent = components["schemas"]["Event"];
export type Problem = components["schemas"]["Problem"];
export type TokenPair = components["schemas"]["TokenPair"];

/** An error the service answered with: its RFC 9457 problem document. */
export class ProblemError extends Error {
  constructor(readonly problem: Problem) {
    super(`${problem.status} ${problem.code}: ${problem.detail}`);
  }
}

function fail(problem: Problem | undefined, status: number): never {
  throw new ProblemError(
    problem ?? { type: "about:blank", title: "Error", status, detail: "", code: "unknown" },
  );
}

/** A client for one base URL; with a token, every call sends it as Bearer. */
export function connect(baseUrl: string, token?: string) {
  const client = createClient<paths>({ baseUrl });
  if (token !== undefined) {
    client.use({
      onRequest({ request }) {
        request.headers.set("Authorization", `Bearer ${token}`);
        return request;
      },
    });
  }
  return client;
}

export async function signIn(baseUrl: string, username: string, password: string): Promise<TokenPair> {
  const { data, error, response } = await connect(baseUrl).POST("/api/v1/auth/login", {
    body: { username, password },
  });
  if (data === undefined) fail(error, response.status);
  return data;
}

/** Where the caller is signed in: one line per device, the current one starred. */
export async function devices(baseUrl: string, token: string): Promise<string[]> {
  const { data, error, response } = await connect(baseUrl, token).GET("/api/v1/sessions");
  if (data === undefined) fail(error, response.status);
  return data.sessions.map((session: Session) => {
    const place = session.location === null ? "" : ` in ${session.location.city ?? session.location.country ?? "?"}`;
    const label = session.name ?? session.device.label ?? session.device.type;
    return `${session.current ? "*" : " "} ${label} from ${session.ip ?? "?"}${place}, last seen ${session.last_seen_at}`;
  });
}

export async function rename(baseUrl: string, token: string, sessionId: string, name: string | null): Promise<Session> {
  const { data, error, response } = await connect(baseUrl, token).PATCH("/api/v1/sessions/{session_id}", {
    params: { path: { session_id: sessionId } },
    body: { name },
  });
  if (data === undefined) fail(error, response.status);
  return data;
}

/** Sign out every other device; returns how many sessions ended. */
export async function signOutOthers(baseUrl: string, token: string): Promise<number> {
  const { data, error, response } = await connect(baseUrl, token).DELETE("/api/v1/sessions", {
    params: { query: { include_current: "false" } },
  });
  if (data === undefined) fail(error, response.status);
  return data.revoked;
}

/** The newest security events; sign-outs carry their reason. */
export async function recentEvents(baseUrl: string, token: string, limit = 20): Promise<SessionEvent[]> {
  const { data, error, response } = await connect(baseUrl, token).GET("/api/v1/sessions/events", {
    params: { query: { limit } },
  });
  if (data === undefined) fail(error, response.status);
  return data.events.filter((event: SessionEvent) => event.type !== "session.revoked" || event.detail.reason !== undefined);
}
