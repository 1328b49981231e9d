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
