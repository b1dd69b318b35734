// The differential flame graph's hover: a tooltip box with the frame's
// <title> lines (before -> after, the change, the atlas summary), drawn in
// the SVG itself so that it shows in every viewer that runs scripts.  Without
// scripts the <title> elements are the browser's own tooltips.  Zoom, search
// and the status line are flamegraph.js's, loaded before this.
(function () {
  "use strict";
  var svg = document.documentElement;
  var tip = document.getElementById("tip");
  var box = tip.querySelector("rect");
  var NS = "http://www.w3.org/2000/svg";
  var LINE = 15;
  var WRAP = 90;  // characters: the atlas summaries are long sentences
  var width = +svg.getAttribute("width");
  var height = +svg.getAttribute("height");

  function frameOf(e) {
    var el = e.target;
    return el && el.closest ? el.closest("g.f") : null;
  }
  function wrap(text) {
    var out = [];
    text.split("\n").forEach(function (line) {
      while (line.length > WRAP) {
        var cut = line.lastIndexOf(" ", WRAP);
        if (cut <= 0) { cut = WRAP; }
        out.push(line.slice(0, cut));
        line = "  " + line.slice(cut).replace(/^ +/, "");
      }
      out.push(line);
    });
    return out;
  }
  function show(g, x, y) {
    var title = g.querySelector("title").textContent;
    var lines = wrap(title);
    while (tip.childNodes.length > 1) { tip.removeChild(tip.lastChild); }
    var w = 0;
    lines.forEach(function (line, i) {
      var t = document.createElementNS(NS, "text");
      t.setAttribute("x", 8);
      t.setAttribute("y", 16 + i * LINE);
      t.textContent = line;
      tip.appendChild(t);
      w = Math.max(w, t.getComputedTextLength());
    });
    var h = lines.length * LINE + 8;
    box.setAttribute("width", w + 16);
    box.setAttribute("height", h);
    var left = Math.min(x + 12, width - w - 24);
    var top = y + h + 20 > height ? y - h - 8 : y + 14;  // above the pointer near the bottom
    tip.setAttribute("transform",
                     "translate(" + Math.max(0, left) + "," + Math.max(0, top) + ")");
    tip.classList.remove("hide");
  }
  function point(e) {
    var p = svg.createSVGPoint();
    p.x = e.clientX;
    p.y = e.clientY;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  }
  var frames = document.getElementById("frames");
  frames.addEventListener("mousemove", function (e) {
    var g = frameOf(e);
    if (!g) { return; }
    var p = point(e);
    show(g, p.x, p.y);
  });
  frames.addEventListener("mouseout", function () {
    tip.classList.add("hide");
  });
})();
