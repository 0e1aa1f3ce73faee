// keyfab's only script (hand-written, no dependencies): live parts of dashboard pages.
// An element with data-poll="URL" is refreshed from URL every data-every seconds; the
// server answers "X-Keyfab-Poll: stop" once there is nothing left to watch.
"use strict";
(function () {
  function poll(element) {
    var url = element.getAttribute("data-poll");
    var every = Math.max(Number(element.getAttribute("data-every")) || 2, 1) * 1000;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (answer) {
          if (answer.redirected || !answer.ok) { return null; }
          var stop = answer.headers.get("X-Keyfab-Poll") === "stop";
          return answer.text().then(function (html) {
            element.innerHTML = html;
            if (!stop) { window.setTimeout(tick, every); }
          });
        })
        .catch(function () { window.setTimeout(tick, every * 5); });
    }
    window.setTimeout(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
  });
})();
