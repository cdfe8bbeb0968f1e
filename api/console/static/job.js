// mpi console: update a running job's progress in place (no page reload) every 2 seconds.
(function () {
  "use strict";
  function tick() {
    var box = document.getElementById("job");
    if (!box || box.getAttribute("data-running") !== "true") { return; }
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("job");
        if (fresh) {
          box.innerHTML = fresh.innerHTML;
          box.setAttribute("data-running", fresh.getAttribute("data-running"));
        }
        window.setTimeout(tick, 2000);
      })
      .catch(function () { window.setTimeout(tick, 5000); });
  }
  window.setTimeout(tick, 2000);
}());
