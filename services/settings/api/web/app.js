// The settings page: talks to this server's /v1 API with the admin's bearer token, kept in
// sessionStorage (this tab only). The server never sends a credential back; the text area holds
// one only while the admin types it, and is cleared once it is saved.
'use strict';

(() => {
  const TOKEN_KEY = 'byok.settings.token';
  const TENANT_KEY = 'byok.settings.tenant';
  const PLACEHOLDER_STORED = 'stored — leave empty to keep';
  const PLACEHOLDER_NEW = '{\n  "type": "service_account",\n  "private_key_id": "…",\n  …\n}';

  const $ = (id) => document.getElementById(id);
  const state = { providers: [], tenants: [] };
  // What the settings screen calls each provider; the value sent is the provider name.
  const PROVIDER_LABELS = { vault: 'HashiCorp Vault (Transit)', yandex: 'Yandex Cloud KMS', cloudru: 'Cloud.ru KMS', local: 'local key file (development only)' };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
  const tenant = () => $('tenant').value;
  const tenantPath = (rest) => '/v1/tenants/' + encodeURIComponent(tenant()) + rest;

  async function api(method, path, body) {
    const opts = { method, cache: 'no-store', headers: { Authorization: 'Bearer ' + token() } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, 'cannot reach the settings service');
    }
    if (resp.status === 204) return null;
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      // not JSON: the status says enough
    }
    if (!resp.ok) {
      if (resp.status === 401) signOut('Your token was not accepted. Sign in again.');
      throw new ApiError(resp.status, (data && data.error) || 'HTTP ' + resp.status);
    }
    return data;
  }

  function setStatus(el, kind, text) {
    el.textContent = text;
    el.className = 'status' + (kind ? ' ' + kind : '');
  }

  function when(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    return isNaN(d) ? '' : d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  }

  // --- sign in / out ---

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    $('app').hidden = true;
    $('signin').hidden = false;
    $('who').textContent = '';
    $('token').value = '';
    setStatus($('signin-status'), message ? 'error' : '', message || '');
  }

  async function signIn() {
    let data;
    try {
      data = await api('GET', '/v1/tenants');
    } catch (e) {
      if (e.status !== 401) setStatus($('signin-status'), 'error', e.message);
      return;
    }
    state.providers = data.providers || [];
    const maxTTL = data.max_dek_cache_ttl_seconds || 0;
    $('dek-ttl').max = maxTTL;
    $('dek-ttl-hint').textContent = 'How long byok may reuse a key your KMS gave it before asking again, and so the longest reading can go on after you revoke access in your KMS. 0: the default; at most ' + maxTTL + ' s.';
    state.tenants = data.tenants || [];
    $('who').textContent = 'Signed in as ' + data.admin;
    const sel = $('tenant');
    sel.replaceChildren();
    for (const t of state.tenants) sel.append(new Option(tenantLabel(t), t.tenant_id));
    const remembered = sessionStorage.getItem(TENANT_KEY);
    if (state.tenants.some((t) => t.tenant_id === remembered)) sel.value = remembered;
    $('signin').hidden = true;
    $('app').hidden = false;
    setStatus($('signin-status'), '', '');
    await selectTenant();
  }

  function tenantLabel(v) {
    return v.tenant_id + (v.enabled ? ' — advanced encryption on' : '');
  }

  async function selectTenant() {
    if (!tenant()) return;
    sessionStorage.setItem(TENANT_KEY, tenant());
    setStatus($('status'), '', '');
    setStatus($('rev-status'), '', '');
    await Promise.all([loadSettings(), loadRevocations()]);
  }

  // --- settings ---

  function renderSettings(v) {
    $('enabled').checked = v.enabled;
    $('enabled-badge').textContent = v.enabled ? 'On' : 'Off';
    $('enabled-badge').className = 'badge ' + (v.enabled ? 'on' : 'off');
    const sel = $('provider');
    sel.replaceChildren();
    const names = state.providers.slice();
    if (v.provider && !names.includes(v.provider)) names.push(v.provider);
    for (const p of names) sel.append(new Option(PROVIDER_LABELS[p] || p, p));
    sel.value = v.provider || names[0] || '';
    $('kek-id').value = v.kek_id || '';
    $('dek-ttl').value = String(v.dek_cache_ttl_seconds || 0);
    const cred = $('credential');
    cred.value = '';
    cred.placeholder = v.credential_set ? PLACEHOLDER_STORED : PLACEHOLDER_NEW;
    cred.dataset.stored = v.credential_set ? 'true' : 'false';
    $('meta').textContent = v.revision
      ? 'Revision ' + v.revision + ', saved ' + when(v.updated_at) + ' by ' + v.updated_by
      : 'Not saved yet';
    const opt = [...$('tenant').options].find((o) => o.value === v.tenant_id);
    if (opt) opt.textContent = tenantLabel(v);
  }

  async function loadSettings() {
    try {
      renderSettings(await api('GET', tenantPath('/settings')));
    } catch (e) {
      setStatus($('status'), 'error', 'Cannot load the settings: ' + e.message);
    }
  }

  async function save(ev) {
    ev.preventDefault();
    const body = { enabled: $('enabled').checked, provider: $('provider').value, kek_id: $('kek-id').value.trim() };
    const cred = $('credential').value.trim();
    if (cred) body.credential = cred;
    const ttl = $('dek-ttl').value.trim();
    if (ttl !== '') body.dek_cache_ttl_seconds = Number(ttl);
    const button = $('save');
    button.disabled = true;
    setStatus($('status'), 'pending', body.enabled ? 'Checking the key with your KMS…' : 'Saving…');
    try {
      const v = await api('PUT', tenantPath('/settings'), body);
      renderSettings(v);
      setStatus($('status'), 'ok', v.enabled
        ? 'Saved. Advanced encryption is on: new messages are encrypted.'
        : 'Saved. Advanced encryption is off.');
    } catch (e) {
      setStatus($('status'), 'error', 'Not saved: ' + e.message);
    } finally {
      button.disabled = false;
    }
  }

  // --- revocations ---

  function renderRevocations(list) {
    const rows = list.map((r) => {
      const tr = document.createElement('tr');
      tr.dataset.id = r.revocation_id;
      for (const text of [r.covers, r.reason, r.created_by || '', when(r.created_at)]) {
        const td = document.createElement('td');
        td.textContent = text;
        tr.append(td);
      }
      const td = document.createElement('td');
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'secondary unrevoke';
      b.textContent = 'Un-revoke';
      b.addEventListener('click', () => unrevoke(r));
      td.append(b);
      tr.append(td);
      return tr;
    });
    $('revocations').replaceChildren(...rows);
    $('revocations-empty').hidden = list.length > 0;
  }

  async function loadRevocations() {
    try {
      renderRevocations((await api('GET', tenantPath('/revocations'))).revocations);
    } catch (e) {
      setStatus($('rev-status'), 'error', 'Cannot load the revocations: ' + e.message);
    }
  }

  async function revoke(ev) {
    ev.preventDefault();
    const body = { reason: $('rev-reason').value.trim() };
    const chat = $('rev-chat').value.trim();
    const from = $('rev-from').value;
    const to = $('rev-to').value;
    if (chat) body.chat_id = chat;
    if (from) body.from_day = from;
    if (to) body.to_day = to;
    if (!chat && !from && !to && !window.confirm('Revoke every chat on every day of ' + tenant() + '?')) return;
    const button = $('revoke');
    button.disabled = true;
    try {
      const r = await api('POST', tenantPath('/revocations'), body);
      setStatus($('rev-status'), 'ok', 'Revoked: ' + r.covers + '.');
      $('revoke-form').reset();
      await loadRevocations();
    } catch (e) {
      setStatus($('rev-status'), 'error', 'Not revoked: ' + e.message);
    } finally {
      button.disabled = false;
    }
  }

  async function unrevoke(r) {
    try {
      await api('DELETE', tenantPath('/revocations/' + encodeURIComponent(r.revocation_id)));
      setStatus($('rev-status'), 'ok', 'Withdrawn: ' + r.covers + '.');
    } catch (e) {
      setStatus($('rev-status'), 'error', 'Not withdrawn: ' + e.message);
    }
    await loadRevocations();
  }

  // --- wiring ---

  document.addEventListener('DOMContentLoaded', () => {
    $('signin-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token').value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      $('token').value = '';
      signIn();
    });
    $('signout').addEventListener('click', () => signOut(''));
    $('tenant').addEventListener('change', selectTenant);
    $('enabled').addEventListener('change', () => {
      const on = $('enabled').checked;
      $('enabled-badge').textContent = on ? 'On (not saved)' : 'Off (not saved)';
    });
    $('settings-form').addEventListener('submit', save);
    $('revoke-form').addEventListener('submit', revoke);
    if (token()) signIn();
  });
})();
