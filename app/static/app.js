// Small behaviours the pages share; everything works without them.
document.addEventListener("change", (event) => {
  const select = event.target.closest(".tenant-switcher select");
  if (select) select.form.requestSubmit();
});

// Keyboard shortcuts: a key on a button with data-shortcut presses it, unless typing.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const tag = (event.target.tagName || "").toLowerCase();
  if (["input", "textarea", "select"].includes(tag)) return;
  const button = document.querySelector(`[data-shortcut="${event.key}"]`);
  if (button) {
    event.preventDefault();
    button.click();
  }
});
