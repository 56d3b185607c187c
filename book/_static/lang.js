// The book's language switch reaches table headers, cells and captions too: alignkit.tables writes both
// languages as <span class="ak-en"> / <span class="ak-zh">; this script marks <html data-aklang="en|zh"> after
// the page's English / 中文 tab choice (sphinx-design keeps it in localStorage), and lang.css hides the other.
(function () {
  var KEY = "sphinx-design-tab-id-lang";
  function current() {
    var checked = document.querySelector("input[id^=sd-tab-item]:checked + label[data-sync-group=lang]");
    if (checked) return checked.dataset.syncId;
    try { return window.localStorage.getItem(KEY) || "en"; } catch (e) { return "en"; }
  }
  function apply(lang) { document.documentElement.setAttribute("data-aklang", lang === "zh" ? "zh" : "en"); }
  function sync() { apply(current()); }
  try { apply(window.localStorage.getItem(KEY) || "en"); } catch (e) { apply("en"); }
  document.addEventListener("DOMContentLoaded", sync);
  window.addEventListener("load", sync);
  document.addEventListener("click", function (event) {
    var label = event.target.closest && event.target.closest("label[data-sync-group=lang]");
    if (label) apply(label.dataset.syncId);
  });
  document.addEventListener("change", function () { setTimeout(sync, 0); });
})();
