// Passkeys (WebAuthn): asks the server for options (a POST, it keeps a challenge), lets the
// browser make or use a passkey, and posts the answer as base64url JSON in a hidden field of
// the form the button belongs to. The server checks everything; this only carries bytes.
(() => {
  const toBytes = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0)).buffer;
  };
  const toText = (buffer) => {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };
  const descriptors = (list) => (list || []).map((d) => ({ ...d, id: toBytes(d.id) }));

  const creationOptions = (json) => ({
    ...json,
    challenge: toBytes(json.challenge),
    user: { ...json.user, id: toBytes(json.user.id) },
    excludeCredentials: descriptors(json.excludeCredentials),
  });
  const requestOptions = (json) => ({
    ...json,
    challenge: toBytes(json.challenge),
    allowCredentials: descriptors(json.allowCredentials),
  });

  const answer = (credential) => {
    const r = credential.response;
    const response = { clientDataJSON: toText(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toText(r.attestationObject);
      if (r.getTransports) response.transports = r.getTransports();
    } else {
      response.authenticatorData = toText(r.authenticatorData);
      response.signature = toText(r.signature);
      if (r.userHandle) response.userHandle = toText(r.userHandle);
    }
    return JSON.stringify({
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response,
    });
  };

  const explain = (error) => {
    switch (error && error.name) {
      case "NotAllowedError":
        return "The passkey request was cancelled or timed out. Try again.";
      case "InvalidStateError":
        return "This authenticator already holds one of your passkeys.";
      case "SecurityError":
        return "Passkeys cannot be used at this address. Open Cleardesk by its usual name (over https).";
      case "NotSupportedError":
        return "This authenticator cannot make a passkey Cleardesk accepts.";
      default:
        return (error && error.message) || "The passkey could not be used. Try again.";
    }
  };

  const show = (form, message) => {
    const box = form.querySelector("[data-passkey-error]");
    if (box) {
      box.textContent = message;
      box.hidden = !message;
    }
  };

  const supported = () => !!(window.PublicKeyCredential && navigator.credentials);
  const NOT_SUPPORTED =
    "This browser cannot use passkeys. Use another browser, or a code from your authenticator app.";

  const fetchOptions = async (form, url) => {
    const token = form.querySelector("input[name=csrf_token]");
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": token ? token.value : "", Accept: "application/json" },
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || "Cleardesk could not start the passkey request. Reload the page.");
    return data.publicKey;
  };

  const run = async (button, make) => {
    const form = button.closest("form");
    show(form, "");
    if (!supported()) return show(form, NOT_SUPPORTED);
    if (!form.reportValidity()) return; // the form's other fields first (a name, a reason)
    button.disabled = true;
    try {
      const options = await fetchOptions(form, button.dataset.optionsUrl || form.dataset.optionsUrl);
      const credential = make
        ? await navigator.credentials.create({ publicKey: creationOptions(options) })
        : await navigator.credentials.get({ publicKey: requestOptions(options) });
      form.querySelector(make ? "input[name=credential]" : "input[name=passkey]").value = answer(credential);
      form.submit();
    } catch (error) {
      show(form, explain(error));
      button.disabled = false;
    }
  };

  // Adding a passkey: the form's own submit button, once the name is given.
  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-passkey-create]");
    if (!form || form.querySelector("input[name=credential]").value) return;
    event.preventDefault();
    run(event.submitter || form.querySelector("button[type=submit]"), true);
  });

  // Using a passkey where a code is asked for.
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-passkey-get]");
    if (!button) return;
    event.preventDefault();
    run(button, false);
  });

  // Say so up front when the browser has no WebAuthn.
  const markUnsupported = () => {
    if (supported()) return;
    for (const button of document.querySelectorAll("[data-passkey-get], form[data-passkey-create] button[type=submit]")) {
      // An offer (signing in with a passkey) is simply not made; where a passkey is the
      // person's factor, they are told why it cannot be used here.
      if (button.hasAttribute("data-hide-unsupported")) button.hidden = true;
      else if (button.closest("form")) show(button.closest("form"), NOT_SUPPORTED);
    }
  };
  document.addEventListener("DOMContentLoaded", markUnsupported);
  document.addEventListener("htmx:afterSettle", markUnsupported);
})();
