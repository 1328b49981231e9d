// chatport console: the little JavaScript the pages need (no library, no build step).
// - [data-copy=ID] buttons copy the text of element ID (new secrets, curl lines).
// - The playground (#playground) streams answers from the console's turn endpoint over
//   fetch + ReadableStream, reading chatport's server-sent events (start, delta, done, error).
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  if (!field) return;
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
  } catch (_) {
    document.execCommand("copy");  // plain http: the clipboard API may be unavailable
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 2000);
});

// ---------------------------------------------------------------- playground

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Server-sent events from a fetch response: calls onEvent(type, data) for each frame.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) type = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) onEvent(type, JSON.parse(data.join("\n")));
    }
  }
}

function ratingForms(box, messageId, csrf) {
  const rate = el("div", { class: "rate" });
  for (const [value, label] of [["like", "Like"], ["dislike", "Dislike"]]) {
    const form = el("form", { method: "post", class: "inline",
                              action: box.dataset.rate.replace("MESSAGE_ID", messageId) });
    form.append(el("input", { type: "hidden", name: "csrf_token", value: csrf }),
                el("input", { type: "hidden", name: "next", value: "playground" }),
                el("input", { type: "hidden", name: "rating", value: value }),
                el("button", { type: "submit", class: "quiet", "aria-pressed": "false" }, label));
    rate.append(form);
  }
  return rate;
}

function citationList(citations) {
  const list = el("ol", { class: "citations", "aria-label": "Citations" });
  for (const c of citations) {
    const item = el("li");
    item.append(el("span", { class: "source" }, c.source), " · ", el("span", { class: "row" }, c.row || c.row_id));
    list.append(item);
  }
  return list;
}

function startPlayground(box) {
  const form = document.getElementById("composer");
  const chat = document.getElementById("chat");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  const status = document.getElementById("status");
  const textarea = form.querySelector("textarea");
  const csrf = form.querySelector("input[name=csrf_token]").value;
  let messageId = null;
  box.dataset.live = "true";  // from here on answers stream (without this script the form posts)

  textarea.addEventListener("keydown", (event) => {  // Ctrl/Cmd+Enter sends
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });

  stop.addEventListener("click", async () => {
    if (!messageId) return;
    stop.disabled = true;
    status.textContent = "Stopping…";
    await fetch(box.dataset.stop.replace("MESSAGE_ID", messageId),
                { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = textarea.value;
    if (!content.trim()) { status.textContent = "Type a message first."; textarea.focus(); return; }
    const body = new URLSearchParams(new FormData(form));
    body.set("stream", "on");
    const user = el("li", { class: "msg user" });
    user.append(el("span", { class: "who" }, "user"), el("span", { class: "text" }, content));
    const answer = el("li", { class: "msg assistant", "aria-busy": "true" });
    const who = el("span", { class: "who" }, "assistant");
    const text = el("span", { class: "text" });
    answer.append(who, text);
    chat.append(user, answer);
    chat.scrollTop = chat.scrollHeight;
    textarea.value = "";
    send.disabled = true;
    stop.hidden = false;
    stop.disabled = true;
    status.textContent = "Answering…";
    messageId = null;
    try {
      const response = await fetch(box.dataset.send, {
        method: "POST", body, credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, Accept: "text/event-stream" },
      });
      if (!response.ok) {
        let message = `HTTP ${response.status}`;
        try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
        throw new Error(message);
      }
      await readEvents(response, (type, data) => {
        if (type === "start") {
          messageId = data.message_id;
          answer.id = "m-" + messageId;
          who.textContent = "assistant · " + data.model;
          stop.disabled = false;
        } else if (type === "delta") {
          text.textContent += data.text;
          chat.scrollTop = chat.scrollHeight;
        } else if (type === "done") {
          if (data.status !== "complete") who.textContent += " · " + data.status;
          if (data.citations.length) answer.append(citationList(data.citations));
          answer.append(ratingForms(box, data.message_id, csrf));
          status.textContent = data.finish_reason === "stopped" ? "Stopped." : "Done.";
        } else if (type === "error") {
          answer.classList.add("error");
          answer.append(el("p", { class: "error" }, data.error.message));
          status.textContent = "The model failed.";
        }
      });
    } catch (error) {
      answer.classList.add("error");
      answer.append(el("p", { class: "error" }, "Not sent: " + error.message));
      status.textContent = "Not sent.";
      textarea.value = content;
    } finally {
      answer.removeAttribute("aria-busy");
      send.disabled = false;
      stop.hidden = true;
      messageId = null;
      textarea.focus();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("playground");
  if (box) startPlayground(box);
});

// ---------------------------------------------------------------- knowledge: live sync state

function watchSync(box) {
  const state = document.getElementById("sync-state");
  if (!state || state.dataset.state !== "syncing") return;
  let rounds = 0;
  const timer = setInterval(async () => {
    rounds += 1;
    try {
      const response = await fetch(box.dataset.stateUrl, { credentials: "same-origin" });
      const data = await response.json();
      if (data.state !== state.dataset.state) {
        clearInterval(timer);
        window.location.reload();  // rows' states and the error come with the page
      }
    } catch (_) { /* try again next round */ }
    if (rounds > 900) clearInterval(timer);  // a quarter of an hour: a stale claim (see knowledge.STALE_SYNC)
  }, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("sync");
  if (box) watchSync(box);
});
