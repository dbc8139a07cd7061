// Drag and drop on top of the plain form: without JavaScript the file picker still works.
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
