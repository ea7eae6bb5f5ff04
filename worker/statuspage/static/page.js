// Live refresh: fetch the same page and swap its content in place, so
// that the filters, the scroll position and a text selection survive.
// The "live" box turns it off; a hidden tab does not refresh at all.
(function () {
  "use strict";
  var box = document.getElementById("live");
  var content = document.getElementById("content");
  if (!box || !content) {
    return;
  }
  var period = 2000;
  var busy = false;
  function refresh() {
    if (!box.checked || document.hidden || busy) {
      return;
    }
    busy = true;
    fetch(window.location.href, { cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (text) {
        var next = new DOMParser().parseFromString(text, "text/html").getElementById("content");
        if (next) {
          content.innerHTML = next.innerHTML;
        }
        document.getElementById("stale").hidden = true;
      })
      .catch(function () {
        // The worker restarting is no reason to fill the console.
        document.getElementById("stale").hidden = false;
      })
      .finally(function () {
        busy = false;
      });
  }
  window.setInterval(refresh, period);
})();
