// What htmx does not do for the board: the confirmation dialog of an action, pausing the live
// updates, and saying so when a refresh failed. Plain JavaScript, served by `jobtriggers board`.
(function () {
  "use strict";

  const ACTIONS = {
    rerun: {
      title: "Rerun this job?",
      confirm: "Rerun job",
      style: "primary",
      text: () => "It becomes pending again with a fresh attempt budget. Its earlier operations stay as history.",
    },
    cancel: {
      title: "Cancel this job?",
      confirm: "Cancel job",
      style: "danger",
      text: (status) =>
        status === "claimed"
          ? "The site that holds it is told at its next heartbeat, and stops its command."
          : status === "failed"
            ? "It becomes cancelled and is not run again unless someone reruns it."
            : "It becomes cancelled and no site will claim it.",
    },
  };
  const LIVE_REGIONS = new Set(["overview", "job"]);
  let openerId = null; // the button that opened the dialog, to give focus back to
  let refocusAfterAction = false;

  const byId = (id) => document.getElementById(id);
  const isLive = () => !byId("live-toggle") || byId("live-toggle").checked;

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) {
      const action = ACTIONS[button.dataset.action];
      byId("confirm-title").textContent = action.title;
      byId("confirm-what").textContent = button.dataset.what;
      byId("confirm-text").textContent = action.text(button.dataset.status);
      byId("confirm-job").textContent = button.dataset.job;
      byId("confirm-yes").textContent = action.confirm;
      byId("confirm-yes").className = "button " + action.style;
      byId("confirm-form").setAttribute("action", button.dataset.url);
      openerId = button.id;
      byId("confirm").showModal();
      return;
    }
    if (event.target.id === "confirm-no") byId("confirm").close("kept");
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.id !== "confirm-form") return;
    event.preventDefault();
    byId("confirm").close("confirmed");
    refocusAfterAction = true;
    htmx.ajax("POST", form.getAttribute("action"), { source: form, target: "#notice", swap: "innerHTML" });
  });

  // The dialog gives focus back to its opener; a refresh may have replaced that button since.
  document.addEventListener("close", (event) => {
    if (event.target.id !== "confirm") return;
    const opener = openerId && byId(openerId);
    if (opener) opener.focus();
  }, true);

  // After an action, the refresh may remove the button (a rerun job leaves the failed list):
  // then the result is where focus goes, rather than nowhere.
  document.addEventListener("htmx:afterSettle", (event) => {
    if (!LIVE_REGIONS.has(event.detail.elt.id) || !refocusAfterAction) return;
    refocusAfterAction = false;
    const active = document.activeElement;
    if (!active || active === document.body) byId("notice").focus();
  });

  // A refresh redraws its region: what the reader opened stays open. (Focus is kept by htmx itself,
  // which finds the focused element's id again after the swap: focusable elements all have one.)
  const openDetails = new Set();
  document.addEventListener("toggle", (event) => {
    const details = event.target;
    if (details.tagName !== "DETAILS" || !details.id) return;
    if (details.open) openDetails.add(details.id);
    else openDetails.delete(details.id);
  }, true);
  document.addEventListener("htmx:afterSwap", (event) => {
    if (!LIVE_REGIONS.has(event.detail.elt.id)) return;
    for (const id of openDetails) {
      const details = byId(id);
      if (details) details.open = true;
    }
  });

  // Paused: the polls are dropped, but a refresh after an action still happens.
  document.addEventListener("htmx:beforeRequest", (event) => {
    if (!LIVE_REGIONS.has(event.detail.elt.id) || isLive()) return;
    const trigger = event.detail.requestConfig && event.detail.requestConfig.triggeringEvent;
    if (!trigger || trigger.type !== "board-changed") event.preventDefault();
  });

  document.addEventListener("change", (event) => {
    if (event.target.id !== "live-toggle") return;
    const refreshed = byId("refreshed");
    refreshed.classList.toggle("paused", !isLive());
    if (isLive()) htmx.trigger(document.body, "board-changed");
  });

  function markStale() {
    const refreshed = byId("refreshed");
    if (refreshed.querySelector(".stale-note")) return;
    const note = document.createElement("span");
    note.className = "stale-note";
    note.textContent = " · could not refresh: is jobtriggers board still running?";
    refreshed.classList.add("stale");
    refreshed.appendChild(note);
  }
  for (const name of ["htmx:sendError", "htmx:responseError"]) {
    document.addEventListener(name, (event) => {
      if (LIVE_REGIONS.has(event.detail.elt.id)) markStale();
      else if (event.detail.target && event.detail.target.id === "notice") actionFailed(event.detail.xhr);
    });
  }

  // An action that failed on the server's side (not a refusal: those are 4xx messages, shown as sent).
  function actionFailed(xhr) {
    const notice = byId("notice");
    const reason = xhr && xhr.status ? "the board answered " + xhr.status : "the board did not answer";
    notice.replaceChildren();
    const p = document.createElement("p");
    p.className = "notice refused";
    p.textContent = "Not done: " + reason + "; the terminal running jobtriggers board says why.";
    notice.appendChild(p);
  }
})();
