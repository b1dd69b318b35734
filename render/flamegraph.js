(function () {
  "use strict";
  var CFG = __CFG__;
  var frames = Array.prototype.slice.call(document.querySelectorAll("g.f"));
  var details = document.getElementById("details");
  var matched = document.getElementById("matched");
  var unzoomBtn = document.getElementById("unzoom");
  var searchBtn = document.getElementById("search");
  var zoomed = null;
  var term = null;

  function num(g, a) { return +g.getAttribute(a); }
  function fit(name, px) {
    var chars = Math.floor((px - 6) / CFG.charw);
    if (chars < 3) { return ""; }
    return name.length <= chars ? name : name.slice(0, chars - 2) + "..";
  }
  function place(g, x, w) {
    var r = g.querySelector("rect"), t = g.querySelector("text");
    r.setAttribute("x", x.toFixed(2));
    r.setAttribute("width", w.toFixed(2));
    t.setAttribute("x", (x + 3).toFixed(2));
    t.textContent = fit(g.getAttribute("data-n"), w);
  }
  function original(g) {
    var s = CFG.inner / CFG.total;
    place(g, CFG.pad + num(g, "data-x") * s, num(g, "data-w") * s);
  }
  function reset() {
    zoomed = null;
    frames.forEach(function (g) {
      g.classList.remove("hide");
      g.classList.remove("parent");
      original(g);
    });
    unzoomBtn.classList.add("hide");
  }
  function zoom(z) {
    var zx = num(z, "data-x"), zw = num(z, "data-w"), zd = num(z, "data-d");
    if (zd === 0) { reset(); return; }
    var s = CFG.inner / zw;
    zoomed = z;
    frames.forEach(function (g) {
      var x = num(g, "data-x"), w = num(g, "data-w"), d = num(g, "data-d");
      g.classList.remove("hide");
      g.classList.remove("parent");
      if (d <= zd && x <= zx && x + w >= zx + zw) {
        // The zoomed frame and its ancestors span the full width.
        place(g, CFG.pad, CFG.inner);
        if (g !== z) { g.classList.add("parent"); }
      } else if (d > zd && x >= zx && x + w <= zx + zw) {
        place(g, CFG.pad + (x - zx) * s, w * s);
      } else {
        g.classList.add("hide");
      }
    });
    unzoomBtn.classList.remove("hide");
  }
  function clearSearch() {
    term = null;
    frames.forEach(function (g) { g.classList.remove("match"); });
    matched.textContent = " ";
    searchBtn.textContent = "Search";
  }
  function search(t) {
    if (!t) { clearSearch(); return; }
    var re = null;
    try { re = new RegExp(t); } catch (e) { re = null; }
    var spans = [];
    term = t;
    frames.forEach(function (g) {
      var n = g.getAttribute("data-n");
      var hit = re ? re.test(n) : n.indexOf(t) >= 0;
      if (hit) {
        g.classList.add("match");
        spans.push([num(g, "data-x"), num(g, "data-x") + num(g, "data-w")]);
      } else {
        g.classList.remove("match");
      }
    });
    // The union of the matched spans, so a match nested in a match counts once.
    spans.sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; });
    var sum = 0, end = -Infinity;
    spans.forEach(function (sp) {
      if (sp[1] <= end) { return; }
      sum += sp[1] - Math.max(sp[0], end);
      end = sp[1];
    });
    matched.textContent = "Matched: " + (100 * sum / CFG.total).toFixed(1) + "%";
    searchBtn.textContent = "Clear search";
  }
  function askSearch() {
    if (term) { clearSearch(); return; }
    var t = window.prompt("Search for a function (regular expression):", "");
    if (t !== null) { search(t); }
  }
  function frameOf(e) {
    var el = e.target;
    return el && el.closest ? el.closest("g.f") : null;
  }
  document.getElementById("frames").addEventListener("click", function (e) {
    var g = frameOf(e);
    if (g) { zoom(g); }
  });
  document.getElementById("frames").addEventListener("mouseover", function (e) {
    var g = frameOf(e);
    if (!g) { return; }
    var lines = g.querySelector("title").textContent.split("\n");
    details.textContent = lines.slice(0, 4).join("  \u00b7  ");
  });
  document.getElementById("frames").addEventListener("mouseout", function () {
    details.textContent = " ";
  });
  unzoomBtn.addEventListener("click", reset);
  searchBtn.addEventListener("click", askSearch);
  document.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && (e.key === "f" || e.key === "F")) {
      e.preventDefault();
      term = null;
      askSearch();
    } else if (e.key === "Escape") {
      if (term) { clearSearch(); } else if (zoomed) { reset(); }
    }
  });
})();
