// Drag and drop and paste on top of the plain form: without JavaScript the file picker and the
// example buttons still work.
"use strict";
document.documentElement.classList.add("has-js");
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("upload-form");
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("file-input");
  const button = document.getElementById("submit-button");
  if (!form || !zone || !input) return;
  const stop = (event) => { event.preventDefault(); event.stopPropagation(); };
  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
    stop(event);
    zone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, (event) => {
    stop(event);
    zone.classList.remove("dragging");
  }));
  zone.addEventListener("drop", (event) => {
    if (!event.dataTransfer || event.dataTransfer.files.length === 0) return;
    input.files = event.dataTransfer.files;
    form.requestSubmit();
  });
  form.addEventListener("submit", () => {
    if (button) { button.disabled = true; button.textContent = "Checking..."; }
  });
});
// A page restored from the back-forward cache keeps the disabled button; enable it again.
window.addEventListener("pageshow", () => {
  const button = document.getElementById("submit-button");
  if (button && button.textContent === "Checking...") {
    button.disabled = false;
    button.textContent = "Check";
  }
});
// Paste an image (a screenshot, an image copied in another tab) to check it at once.
document.addEventListener("paste", (event) => {
  const form = document.getElementById("upload-form");
  const input = document.getElementById("file-input");
  const items = event.clipboardData ? Array.from(event.clipboardData.files) : [];
  const images = items.filter((file) => file.type.startsWith("image/"));
  if (!form || !input || images.length === 0) return;
  event.preventDefault();
  const transfer = new DataTransfer();
  images.forEach((file, index) => {
    // Browsers name every pasted image "image.png"; number them so the results can be told apart.
    const name = images.length > 1 ? `pasted-${index + 1}.png` : "pasted.png";
    transfer.items.add(file.name && file.name !== "image.png" ? file : new File([file], name, { type: file.type }));
  });
  input.files = transfer.files;
  form.requestSubmit();
});
