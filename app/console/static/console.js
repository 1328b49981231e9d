// chatport console: the little JavaScript the pages need (no library, no build step).
// - [data-copy=ID] buttons copy the text of element ID (new secrets, curl lines).
// - The playground (#playground) streams answers from the console's turn endpoint over
//   fetch + ReadableStream, reading chatport's server-sent events (start, delta, done, error).
// - An automation's run page (#runner) streams each step's output the same way (step_start,
//   delta, step_finish, done, error).
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

// ---------------------------------------------------------------- automations: a run, live

function startRunner(box) {
  const form = document.getElementById("run-form");
  const run = document.getElementById("run");
  const status = document.getElementById("run-status");
  const csrf = form.querySelector("input[name=csrf_token]").value;
  box.dataset.live = "true";  // from here on runs stream (without this script the form posts)

  function showFieldErrors(fields) {
    for (const old of form.querySelectorAll("p.error[data-live]")) old.remove();
    for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
    for (const [name, message] of Object.entries(fields || {})) {
      const control = document.getElementById("f-inputs." + name);
      if (!control) continue;
      control.setAttribute("aria-invalid", "true");
      control.after(el("p", { class: "error", "data-live": "true" },
                       message === "missing" ? "Required: this input has no default." : message));
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    body.set("stream", "on");
    const outs = {};
    for (const item of box.querySelectorAll(".step-out")) {
      outs[item.dataset.step] = item;
      item.className = "step-out";
      item.querySelector(".state").textContent = "waiting";
      item.querySelector(".text").textContent = "";
    }
    for (const old of box.querySelectorAll(".run-done")) old.remove();
    run.disabled = true;
    status.textContent = "Running…";
    showFieldErrors({});
    try {
      const response = await fetch(form.action, {
        method: "POST", body, credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, Accept: "text/event-stream" },
      });
      if (!response.ok) {
        let message = `HTTP ${response.status}`;
        try {
          const error = (await response.json()).error;
          message = error.message;
          showFieldErrors(error.fields);
        } catch (_) { /* not JSON */ }
        throw new Error(message);
      }
      await readEvents(response, (type, data) => {
        const item = outs[data.step];
        if (type === "step_start" && item) {
          item.classList.add("running");
          item.setAttribute("aria-busy", "true");
          item.querySelector(".state").textContent = "running";
        } else if (type === "delta" && item) {
          item.querySelector(".text").textContent += data.text;
        } else if (type === "step_finish" && item) {
          item.classList.remove("running");
          item.removeAttribute("aria-busy");
          item.querySelector(".state").textContent = "done";
          // the step's value as the next steps see it (a list step's items, parsed)
          item.querySelector(".text").textContent =
            typeof data.output === "string" ? data.output : JSON.stringify(data.output);
        } else if (type === "done") {
          const link = el("a", { href: data.url }, "the run's log");
          const done = el("p", { class: "run-done" }, `Done: ${data.credits} credit(s). See `);
          done.append(link, ".");
          box.append(done);
          status.textContent = "Done.";
        } else if (type === "error") {
          if (item) {
            item.classList.remove("running");
            item.classList.add("error");
            item.removeAttribute("aria-busy");
            item.querySelector(".state").textContent = "failed";
          }
          const failed = el("p", { class: "error run-done" }, data.error.message + " ");
          failed.append(el("a", { href: box.dataset.log }, "Run logs"));
          box.append(failed);
          status.textContent = "The run failed.";
        }
      });
    } catch (error) {
      status.textContent = "Not run: " + error.message;
    } finally {
      run.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("runner");
  if (box) startRunner(box);
});
