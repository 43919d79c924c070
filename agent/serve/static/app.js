/* hyrec chat page: a conversation over /v1/chat/completions (streamed), items as cards.
 *
 * The whole conversation is sent each turn (OpenAI style), so "more like the second one" refers
 * to the last answer. A user's personal list (/v1/recommendations) and "more like this"
 * (/v1/similar) join the conversation as answers in the same "N. Title — reason" form, so a
 * follow-up can refer to them too. Like and dislike post /v1/feedback for the signed-in user.
 */
"use strict";
(function () {
  const api = window.hyrecApi;
  const el = api.el;
  const USER = "hyrec.user";
  const log = document.getElementById("log");
  const input = document.getElementById("chat-input");
  const send = document.querySelector("[data-testid=chat-send]");
  let conversation = [];
  let busy = false;

  function randomId() {
    const bytes = new Uint8Array(4);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function currentUser() {
    let user = sessionStorage.getItem(USER);
    if (!user) {
      user = "guest-" + randomId();
      sessionStorage.setItem(USER, user);
    }
    return user;
  }

  function setUser(user) {
    sessionStorage.setItem(USER, user);
    document.getElementById("who").textContent = user;
  }

  function bubble(role, testid = "chat-message") {
    const li = el("li", { class: "msg " + role, testid });
    log.append(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function setBusy(value) {
    busy = value;
    send.disabled = value;
    document.body.classList.toggle("busy", value);
  }

  function details(item) {
    const parts = [];
    if (item.year) parts.push(String(item.year));
    if (item.genres && item.genres.length) parts.push(item.genres.join(", "));
    else if (item.category) parts.push(item.category);
    return parts.join(" · ");
  }

  function card(item) {
    const saved = el("span", { class: "saved", role: "status" });
    const like = el("button", { type: "button", class: "like", testid: "rec-like", text: "Like" });
    const dislike = el("button", {
      type: "button", class: "dislike", testid: "rec-dislike", text: "Dislike",
    });
    const more = el("button", {
      type: "button", class: "more", testid: "rec-more", text: "More like this",
    });
    const sources = item.sources && item.sources.length ? item.sources.join(", ") : null;
    const article = el(
      "article",
      { class: "card", testid: "rec-card", "data-item-id": item.item_id },
      el("h3", { testid: "rec-title", text: item.title }),
      details(item) ? el("p", { class: "meta", text: details(item) }) : null,
      el("p", { class: "reason", testid: "rec-reason", text: item.reason || "" }),
      sources ? el("p", { class: "sources", text: "proposed by " + sources }) : null,
      el("div", { class: "actions" }, like, dislike, more),
      saved,
    );
    like.setAttribute("aria-pressed", "false");
    dislike.setAttribute("aria-pressed", "false");
    const rate = async (event) => {
      like.disabled = dislike.disabled = true;
      saved.className = "saved";
      saved.textContent = "saving…";
      try {
        await api.json("POST", "/v1/feedback", {
          user_id: currentUser(), item_id: item.item_id, event,
        });
        saved.dataset.testid = "feedback-saved";
        saved.classList.add("ok");
        saved.textContent = event === "like" ? "✓ Saved: liked" : "✓ Saved: you won't see it again";
        like.setAttribute("aria-pressed", String(event === "like"));
        dislike.setAttribute("aria-pressed", String(event === "dislike"));
        article.classList.toggle("liked", event === "like");
        article.classList.toggle("disliked", event === "dislike");
      } catch (e) {
        delete saved.dataset.testid;
        saved.classList.add("error");
        saved.textContent = "Not saved: " + e.message;
      } finally {
        like.disabled = dislike.disabled = false;
      }
    };
    like.addEventListener("click", () => rate("like"));
    dislike.addEventListener("click", () => rate("dislike"));
    more.addEventListener("click", () => moreLike(item));
    return article;
  }

  const LISTED = /^\s*\d{1,2}[.)]\s+/;

  /** An answer: its text lines, the numbered ones replaced by cards, then the fallbacks. */
  function render(li, text, extra) {
    const items = (extra && extra.items) || [];
    const body = [];
    let cardsAt = -1;
    for (const line of text.split("\n")) {
      if (items.length && LISTED.test(line)) {
        if (cardsAt < 0) cardsAt = body.length;
        continue;
      }
      if (line.trim()) body.push(el("p", { class: cardsAt < 0 ? "text" : "note", text: line }));
    }
    if (items.length) {
      const cards = el("div", { class: "cards" }, ...items.map(card));
      body.splice(cardsAt < 0 ? body.length : cardsAt, 0, cards);
    }
    for (const line of (extra && extra.fallbacks) || []) {
      body.push(el("p", { class: "fallback", text: "fallback: " + line }));
    }
    li.replaceChildren(...body);
    li.classList.remove("pending");
  }

  function listing(header, items) {
    const lines = items.map((it, n) => `${n + 1}. ${it.title} — ${it.reason || "a match"}`);
    return [header, ...lines].join("\n");
  }

  function failed(li, e) {
    li.classList.remove("pending");
    li.replaceChildren(el("p", { class: "error", text: "Something went wrong: " + e.message }));
  }

  async function ask(text) {
    text = text.trim();
    if (busy || !text) return;
    setBusy(true);
    bubble("user").append(el("p", { text }));
    conversation.push({ role: "user", content: text });
    const li = bubble("assistant");
    li.classList.add("pending");
    const live = el("p", { class: "stream", text: "thinking…" });
    li.append(live);
    try {
      const answer = await api.chatStream(
        { model: "hyrec", messages: conversation, user: currentUser() },
        (soFar) => {
          live.textContent = soFar;
        },
      );
      conversation.push({ role: "assistant", content: answer.text });
      render(li, answer.text, answer.hyrec);
    } catch (e) {
      conversation.pop(); // that turn got no answer: do not send it again
      failed(li, e);
    } finally {
      setBusy(false);
      li.scrollIntoView({ block: "end" });
      input.focus();
    }
  }

  async function moreLike(item) {
    if (busy) return;
    setBusy(true);
    const request = "More like " + item.title;
    bubble("user").append(el("p", { text: request }));
    const li = bubble("assistant");
    li.classList.add("pending");
    li.append(el("p", { class: "stream", text: "looking for similar items…" }));
    try {
      const body = await api.json("POST", "/v1/similar", {
        item_id: item.item_id, k: 5, user_id: currentUser(),
      });
      const text = listing(`${body.items.length} picks — like ${body.title}:`, body.items);
      conversation.push({ role: "user", content: request }, { role: "assistant", content: text });
      render(li, text, { items: body.items, fallbacks: [] });
    } catch (e) {
      failed(li, e);
    } finally {
      setBusy(false);
      li.scrollIntoView({ block: "end" });
    }
  }

  async function loadUser(event) {
    event.preventDefault();
    const box = document.getElementById("user-id");
    let user = box.value.trim();
    if (!user || busy) return;
    if (/^new( user)?$/i.test(user)) user = "new-" + randomId();
    setUser(user);
    box.value = "";
    setBusy(true);
    const li = bubble("assistant");
    li.classList.add("pending");
    li.append(el("p", { class: "stream", text: `loading picks for ${user}…` }));
    try {
      const body = await api.json("POST", "/v1/recommendations", { user_id: user, k: 8 });
      const text = listing(`${body.items.length} picks for ${user}:`, body.items);
      conversation.push({ role: "assistant", content: text });
      render(li, text, body);
    } catch (e) {
      failed(li, e);
    } finally {
      setBusy(false);
      li.scrollIntoView({ block: "end" });
    }
  }

  function welcome() {
    const li = el("li", { class: "msg system" });
    li.append(
      el("p", {
        text: "Ask for something to watch, in your own words. Like or dislike a pick and the " +
          "next answer takes it into account; type a user id above to see their personal list.",
      }),
    );
    log.append(li);
  }

  document.getElementById("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    input.value = "";
    ask(text);
  });
  for (const chip of document.querySelectorAll(".chip")) {
    chip.addEventListener("click", () => ask(chip.textContent));
  }
  document.getElementById("user-form").addEventListener("submit", loadUser);
  document.getElementById("chat-reset").addEventListener("click", () => {
    conversation = [];
    log.replaceChildren();
    welcome();
    input.focus();
  });
  document.addEventListener("hyrec:key", () => input.focus());

  setUser(currentUser());
  welcome();
  api.ready().catch((e) => failed(bubble("assistant", null), e));
})();
