// The admin console: sign in (the account page's tokens, tokens.js), find
// users, show one user's record, sessions and recent events, and do what the
// admin API does. A caller who is not an administrator sees none of it.
(function () {
  "use strict";
  var ADMIN = document.body.dataset.adminUrl + "/users";
  var STORE = document.body.dataset.userStore === "true"; // the user store's routes are mounted
  var AUDIT = document.body.dataset.audit === "true" && document.body.dataset.adminUrl + "/audit"; // the audit trail's route, when on
  var T = sessionsvcTokens; // tokens.js: sign-in, the tokens, refresh
  var D = sessionsvcDescribe; // describe.js: the words for devices, places, times, events
  var PAGE = 20;
  var REVIEW = { pending: "Not yet confirmed by the user", confirmed: "Confirmed by the user" };
  var $ = function (id) { return document.getElementById(id); };
  var shown = null; // the user on screen: { id, record (null without the store) }
  var cursor = null; // the listing's next page, for "More users"
  var auditCursor = null; // the audit history's next page, for "More history"
  var query = "";
  var listing = 0; // how many listings were asked for

  function SignedOut() {}
  function Superseded() {} // another user or listing was asked for while this answer was on its way

  // Stop an action whose user is no longer the one on screen.
  function still(who) { if (shown !== who) throw new Superseded(); }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fill(list, items) { list.replaceChildren.apply(list, items); }

  function status(text) { $("problem").textContent = ""; $("status").textContent = text; }
  function trouble(text) { $("status").textContent = ""; $("problem").textContent = text; }

  // One segment of a path, escaped as the service spells the URL a DPoP
  // proof must name (RFC 3986's sub-delims, ":" and "@" as they are).
  function segment(text) {
    return encodeURIComponent(text).replace(/%(24|26|2B|2C|3A|3B|3D|40)/g, decodeURIComponent);
  }

  // An id the path cannot carry is refused before any request: the server
  // reads a slash as the route's own, and URLs drop "." and "..".
  function userUrl(id) {
    if (/\//.test(id) || id === "." || id === "..") throw new Error("The user id " + id + " cannot be reached through the admin API's URLs.");
    return ADMIN + "/" + segment(id);
  }

  // What each screen shows; every other screen is hidden, and emptied of user data.
  function screen(name) {
    $("signin").hidden = name !== "signin";
    $("refused").hidden = name !== "refused";
    $("console").hidden = name !== "console";
    if (name !== "console") {
      ["user-list", "record-list", "session-list", "event-list", "audit-list"].forEach(function (id) { if ($(id)) fill($(id), []); });
      ["user-heading", "delete-name", "toggle-disabled", "status", "problem"].forEach(function (id) { $(id).textContent = ""; });
      ["query", "roles", "delete-confirm"].forEach(function (id) { $(id).value = ""; });
      $("results").hidden = $("user").hidden = true;
      shown = null;
    }
  }

  function showSignin(message) {
    T.clear();
    screen("signin");
    $("signin-error").textContent = message || "";
    $("username").focus();
  }

  function refuse() {
    screen("refused");
    status("");
    $("refused-heading").focus();
  }

  // A call of the admin API: its JSON, or null. A refusal throws its detail;
  // a signed-out session lands on the sign-in form, a non-admin on "refused".
  async function api(method, url, body) {
    var r = await T.call(method, url, body);
    if (r.status === 401) {
      showSignin("You were signed out.");
      throw new SignedOut();
    }
    if (r.status === 403) {
      refuse();
      throw new SignedOut();
    }
    if (!r.ok) {
      var p = await T.problem(r);
      throw new Error(p.detail || p.title || "Request failed (" + r.status + ").");
    }
    return r.status === 204 ? null : r.json();
  }

  // Run an action; a problem goes to the alert region. True when it was done.
  async function act(action) {
    try {
      await action();
      return true;
    } catch (e) {
      if (!(e instanceof SignedOut || e instanceof Superseded)) trouble(e.message);
      return false;
    }
  }

  function userItem(u) {
    var li = el("li", { class: "user-row", "data-user-id": u.id });
    var open = el("button", { type: "button", class: "user" }, u.id);
    if (shown && shown.id === u.id) open.setAttribute("aria-current", "true");
    open.addEventListener("click", function () { act(function () { return openUser(u.id); }); });
    li.append(open, el("span", { class: "roles" }, u.roles.length ? u.roles.join(", ") : "no roles"));
    if (u.disabled) li.appendChild(el("span", { class: "badge-disabled" }, "Disabled"));
    return li;
  }

  // One page of the listing; `more`: added below the users already listed.
  // The list is aria-busy until the page is in; it is the newest listing's
  // (an older one's late answer is dropped).
  async function listUsers(more) {
    var asked = ++listing;
    $("results").setAttribute("aria-busy", "true");
    try {
      return await showUsers(more, asked);
    } finally {
      if (asked === listing) $("results").removeAttribute("aria-busy");
    }
  }

  async function showUsers(more, asked) {
    var params = new URLSearchParams({ prefix: query, limit: String(PAGE) });
    if (more && cursor) params.set("cursor", cursor);
    var page = await api("GET", ADMIN + "?" + params);
    if (asked !== listing) throw new Superseded();
    var items = page.users.map(userItem);
    if (more) $("user-list").append.apply($("user-list"), items);
    else fill($("user-list"), items);
    cursor = page.next_cursor;
    $("more").hidden = !cursor;
    $("results").hidden = false;
    var total = $("user-list").childElementCount;
    status(total ? D.count(total, "user") + " found" + (cursor ? ", more to come." : ".") : "No users found.");
    return items;
  }

  function fact(term, value) { return [el("dt", {}, term), el("dd", {}, value)]; }

  function when(timestamp, missing) { return timestamp ? new Date(timestamp).toLocaleString("en") : missing; }

  function showRecord(who, u) {
    still(who);
    shown.record = u;
    fill($("record-list"), [].concat(
      fact("Roles", u.roles.length ? u.roles.join(", ") : "none"),
      fact("Status", u.disabled ? "Disabled" : "Active"),
      fact("Created", when(u.created_at, "not recorded")),
      fact("Password changed", when(u.password_changed_at, "never"))
    ));
    $("toggle-disabled").textContent = u.disabled ? "Enable " + u.id : "Disable " + u.id;
    $("toggle-disabled").classList.toggle("danger", !u.disabled);
    $("roles").value = u.roles.join(", ");
    var row = $("user-list").querySelector('[data-user-id="' + CSS.escape(u.id) + '"]');
    if (row) row.replaceWith(userItem(u));
  }

  function sessionItem(s) {
    var name = D.label(s);
    var li = el("li", { class: "session-card", "data-session-id": s.id });
    li.appendChild(el("h4", { class: "device-label" }, name));
    if (s.name) li.appendChild(el("p", { class: "device-detail" }, (s.device && s.device.label) || "Unknown device"));
    var badges = el("p", { class: "badges" });
    (s.risk || []).forEach(function (flag) { badges.appendChild(el("span", { class: "risk", "data-risk": flag }, D.RISKS[flag] || flag)); });
    if (badges.childElementCount) li.appendChild(badges);
    li.append(
      el("p", { class: "location" }, D.place(s.location) + (s.ip ? " · " + s.ip : "")),
      el("p", { class: "review", "data-review": s.review }, REVIEW[s.review] || s.review),
      el("p", { class: "activity" }, D.ago(s.last_seen_at, "") ? "Last seen " + D.ago(s.last_seen_at, "") : "Active now")
    );
    var out = el("button", { type: "button", class: "signout danger", "aria-label": "Sign out " + name }, "Sign out");
    out.addEventListener("click", function () { act(function () { return revoke(s, name); }); });
    li.appendChild(out);
    return li;
  }

  function eventItem(e) {
    var li = el("li", { class: "event", "data-event-type": e.type });
    li.append(el("p", { class: "what" }, D.happening(e, true)), el("p", { class: "when" }, D.ago(e.at, "Just now") + (e.ip ? " · " + e.ip : "")));
    return li;
  }

  function auditItem(e) {
    var li = el("li", { class: "event", "data-event-type": e.type, "data-event-id": e.id });
    li.append(el("p", { class: "what" }, D.happening(e, true)), el("p", { class: "when" }, when(e.at, "") + (e.ip ? " · " + e.ip : "")));
    return li;
  }

  // A page of the user's audit history, newest first; `more`: below the rows
  // shown. A first page that fails says so in the list, not over the page.
  async function loadAudit(who, more) {
    var params = new URLSearchParams({ user_id: who.id, limit: String(PAGE) });
    if (more && auditCursor) params.set("cursor", auditCursor);
    var page;
    try {
      page = await api("GET", AUDIT + "?" + params);
    } catch (e) {
      if (more || e instanceof SignedOut) throw e;
      still(who);
      fill($("audit-list"), [el("li", { class: "empty" }, "The audit history cannot be read now: " + e.message)]);
      $("audit-more").hidden = true;
      return [];
    }
    still(who);
    var items = page.events.map(auditItem);
    if (more) $("audit-list").append.apply($("audit-list"), items);
    else fill($("audit-list"), items.length ? items : [el("li", { class: "empty" }, "No recorded events.")]);
    auditCursor = page.next_cursor;
    $("audit-more").hidden = !auditCursor;
    return items;
  }

  // The user's sessions and recent events, as they are now.
  async function loadActivity() {
    var who = shown;
    var url = userUrl(who.id);
    var sessions = (await api("GET", url + "/sessions")).sessions;
    var events = (await api("GET", url + "/events?limit=20")).events;
    still(who);
    fill($("session-list"), sessions.length ? sessions.map(sessionItem) : [el("li", { class: "empty" }, "No sessions.")]);
    $("revoke-all").hidden = !sessions.length;
    fill($("event-list"), events.length ? events.map(eventItem) : [el("li", { class: "empty" }, "No events.")]);
    if (AUDIT) await loadAudit(who, false);
  }

  async function openUser(id) {
    var who = shown = { id: id, record: null };
    $("user").hidden = true;
    $("user-list").querySelectorAll("button.user").forEach(function (b) {
      if (b.textContent === id) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    });
    if (STORE) showRecord(who, await api("GET", userUrl(id)));
    await loadActivity();
    $("user-heading").textContent = id;
    $("record").hidden = $("delete-form").hidden = !STORE;
    $("delete-name").textContent = id;
    $("delete-confirm").value = "";
    $("delete").disabled = true;
    $("user").hidden = false;
    status("Showing " + id + ".");
    $("user-heading").focus();
  }

  async function revoke(s, name) {
    var next = $("session-list").querySelector('[data-session-id="' + CSS.escape(s.id) + '"] ~ li .signout');
    var nextId = next && next.closest("li").dataset.sessionId;
    await api("DELETE", userUrl(shown.id) + "/sessions/" + segment(s.id));
    await loadActivity();
    status("Signed out " + name + " of " + shown.id + ".");
    // Focus on the next session's button, else on what is left to do.
    var again = nextId && $("session-list").querySelector('[data-session-id="' + CSS.escape(nextId) + '"] .signout');
    (again || $("session-list").querySelector(".signout") || $("user-heading")).focus();
  }

  T.form(function () { start(); });

  async function signOut() {
    await T.logout().catch(function () {});
    showSignin("");
    status("You signed out.");
  }
  $("signout").addEventListener("click", signOut);
  $("refused-signout").addEventListener("click", signOut);

  $("search").addEventListener("submit", function (event) {
    event.preventDefault();
    query = $("query").value.trim();
    act(async function () {
      if (STORE) await listUsers(false);
      else if (query) await openUser(query);
    });
  });

  $("more").addEventListener("click", function () {
    act(async function () {
      var added = await listUsers(true);
      if (added.length) added[0].querySelector("button").focus();
    });
  });

  // One "More history" at a time: two would ask for the same page.
  if (AUDIT) $("audit-more").addEventListener("click", function () {
    var button = $("audit-more");
    button.disabled = true;
    act(async function () {
      var added = await loadAudit(shown, true);
      // Focus on the first event it added (the button may be gone).
      if (added.length) {
        added[0].setAttribute("tabindex", "-1");
        added[0].focus();
      }
      status(D.count($("audit-list").childElementCount, "recorded event") + " of " + shown.id + (auditCursor ? ", more to come." : "."));
    }).finally(function () { button.disabled = false; });
  });

  $("revoke-all").addEventListener("click", function () {
    act(async function () {
      var result = await api("DELETE", userUrl(shown.id) + "/sessions");
      await loadActivity();
      status("Signed " + shown.id + " out of " + D.count(result.revoked, "session") + ".");
      $("sessions-heading").focus();
    });
  });

  $("toggle-disabled").addEventListener("click", function () {
    var disabled = !shown.record.disabled;
    act(async function () {
      var who = shown;
      showRecord(who, await api("PATCH", userUrl(who.id), { disabled: disabled }));
      await loadActivity();
      status((disabled ? "Disabled " : "Enabled ") + shown.id + (disabled ? "; their sessions are signed out." : "."));
    });
  });

  $("roles-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var roles = $("roles").value.split(/[\s,]+/).filter(Boolean);
    act(async function () {
      var who = shown;
      showRecord(who, await api("PATCH", userUrl(who.id), { roles: roles }));
      await loadActivity();
      status("Roles of " + shown.id + ": " + (roles.length ? roles.join(", ") : "none") + ".");
    });
  });

  // Delete only once the user's id is typed in full.
  $("delete-confirm").addEventListener("input", function () {
    $("delete").disabled = $("delete-confirm").value !== shown.id;
  });

  $("delete-form").addEventListener("submit", function (event) {
    event.preventDefault();
    if ($("delete-confirm").value !== shown.id) return;
    var who = shown;
    var id = who.id;
    act(async function () {
      await api("DELETE", userUrl(id));
      if (shown === who) {
        $("user").hidden = true;
        shown = null;
      }
      if (STORE && !$("results").hidden) await listUsers(false);
      status("Deleted " + id + ".");
      $("query").focus();
    });
  });

  // After sign-in: ask the admin API (the first page of users; without the
  // user store, the admin's own sessions), so that a non-admin sees nothing.
  async function start() {
    var ok = await act(async function () {
      query = "";
      if (STORE) await listUsers(false);
      else await api("GET", userUrl(T.subject()) + "/sessions"); // an admin may read their own
    });
    if (ok) {
      screen("console");
      $("query").focus();
    }
  }

  if (T.signedIn()) start();
  else showSignin("");
})();
