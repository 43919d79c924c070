/* hyrec web pages: what the chat page and the dashboard share.
 *
 * - the API key: asked for once when /healthz says the server needs one, kept in sessionStorage
 *   (this tab only; never in a URL), sent as "Authorization: Bearer" on every API call;
 * - JSON calls with the server's error messages, and the chat completion read as a stream of
 *   server-sent events (OpenAI chunks; the items arrive in the last chunk's "hyrec" field);
 * - el(): DOM building with textContent only, so catalogue text is never parsed as HTML.
 */
"use strict";
(function () {
  const KEY = "hyrec.apiKey";
  let health = null;
  let waiting = null;

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "testid") node.dataset.testid = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  function key() {
    return sessionStorage.getItem(KEY) || "";
  }

  function askKey(note) {
    const form = document.getElementById("auth");
    const input = form.querySelector("[data-testid=api-key]");
    form.querySelector(".auth-note").textContent =
      note || "This server needs its API key. It is kept in this tab only (sessionStorage).";
    form.hidden = false;
    input.focus();
    if (!waiting) {
      waiting = new Promise((resolve) => {
        form.addEventListener("submit", function entered(event) {
          event.preventDefault();
          const value = input.value.trim();
          if (!value) return;
          sessionStorage.setItem(KEY, value);
          input.value = "";
          form.hidden = true;
          form.removeEventListener("submit", entered);
          waiting = null;
          document.dispatchEvent(new CustomEvent("hyrec:key"));
          resolve();
        });
      });
    }
    return waiting;
  }

  /** Resolves once API calls can be made: no key needed, or one is stored or entered. */
  async function ready() {
    if (!health) {
      const res = await fetch("/healthz");
      if (!res.ok) throw new ApiError(res.status, "the server is not healthy");
      health = await res.json();
    }
    if (health.auth && !key()) await askKey();
    return health;
  }

  async function errorOf(res) {
    let message = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (e) {
      /* not JSON: keep the status line */
    }
    return new ApiError(res.status, message);
  }

  async function request(method, path, body) {
    await ready();
    for (;;) {
      const headers = {};
      if (body !== undefined) headers["Content-Type"] = "application/json";
      if (key()) headers.Authorization = "Bearer " + key();
      const res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (res.status === 401 && health.auth) {
        sessionStorage.removeItem(KEY);
        await askKey("That key was not accepted: enter the server's API key.");
        continue;
      }
      if (!res.ok) throw await errorOf(res);
      return res;
    }
  }

  async function json(method, path, body) {
    return (await request(method, path, body)).json();
  }

  /** A streamed chat completion: onText(fullTextSoFar) per chunk; resolves to {text, hyrec}. */
  async function chatStream(payload, onText) {
    const res = await request("POST", "/v1/chat/completions", { ...payload, stream: true });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let text = "";
    let extra = null;
    const take = (event) => {
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        const choice = chunk.choices && chunk.choices[0];
        const delta = choice && choice.delta ? choice.delta.content : null;
        if (delta) {
          text += delta;
          onText(text);
        }
        if (chunk.hyrec) extra = chunk.hyrec;
      }
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        take(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
    if (buffer.trim()) take(buffer);
    return { text, hyrec: extra || { items: [], fallbacks: [] } };
  }

  window.hyrecApi = { ApiError, el, key, ready, json, chatStream };
})();
