// loopgate inbox: deadline countdowns and live updates. Plain JavaScript, no build step.
// Text from the server is only ever set with textContent, never as HTML.
"use strict";

(function () {
  function left(ms) {
    if (ms <= 0) { return "expired"; }
    var s = Math.floor(ms / 1000);
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    var m = Math.floor(s % 3600 / 60), r = s % 60;
    if (d > 0) { return d + "d " + h + "h left"; }
    if (h > 0) { return h + "h " + m + "m left"; }
    if (m > 0) { return m + "m " + r + "s left"; }
    return r + "s left";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      var ms = Date.parse(el.getAttribute("data-expires")) - now;
      el.textContent = left(ms);
      el.classList.toggle("soon", ms > 0 && ms < 60000);
      el.classList.toggle("over", ms <= 0);
    });
  }

  function decided(data) {
    var live = document.getElementById("live");
    if (live) {
      live.textContent = data.text;
      live.classList.add("done");
    }
    var status = document.getElementById("status");
    if (status) {
      status.textContent = data.status;
      status.className = "status status-" + data.status;
    }
    document.querySelectorAll("#decide button, #decide textarea").forEach(function (el) {
      el.disabled = true;
    });
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      el.removeAttribute("data-expires");
      el.textContent = "decided";
    });
  }

  function listen(url) {
    if (!window.EventSource) { return; }
    var source = new EventSource(url);
    source.addEventListener("decided", function (event) {
      decided(JSON.parse(event.data));
      source.close();
    });
    source.addEventListener("changed", function () {
      var live = document.getElementById("live");
      if (live) { live.textContent = "The list changed; refreshing…"; }
      source.close();
      window.location.reload();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    window.setInterval(tick, 1000);
    var url = document.body.getAttribute("data-events");
    if (url) { listen(url); }
  });
})();
