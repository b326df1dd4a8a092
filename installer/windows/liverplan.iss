; LiverPlan for Windows: Inno Setup 6 script (NOT built on the project's Linux machines; built and
; self-tested by .github/workflows/installers.yml on a Windows runner).
;
;   iscc /DAppVersion=0.1.0 /DBundleDir=..\..\dist\bundle\liverplan /DIconFile=..\..\build\icon\liverplan.ico ^
;        /O..\..\dist installer\windows\liverplan.iss
;
; The CUDA bundle is ~5-6 GB: one setup.exe cannot hold it (Windows refuses executables over 2 GB, NSIS and
; MSI fail there too), so DiskSpanning splits it into LiverPlan-Setup.exe + LiverPlan-Setup-N.bin slices
; that are distributed together in one folder or zip; setup reads the slices beside it.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef BundleDir
  #define BundleDir "..\..\dist\bundle\liverplan"
#endif
#ifndef IconFile
  #define IconFile "..\..\build\icon\liverplan.ico"
#endif

[Setup]
AppId={{6E1B7D52-3C1F-4E7A-9B0C-5A2D9F1C7E41}
AppName=LiverPlan
AppVersion={#AppVersion}
AppVerName=LiverPlan {#AppVersion}
AppPublisher=LiverPlan project
DefaultDirName={autopf}\LiverPlan
DefaultGroupName=LiverPlan
; a clinician without administrator rights can install for themselves (into their own Programs folder)
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputBaseFilename=LiverPlan-{#AppVersion}-Setup
SetupIconFile={#IconFile}
UninstallDisplayIcon={app}\LiverPlanW.exe
UninstallDisplayName=LiverPlan {#AppVersion}
; > 2 GB: slices beside setup.exe (DiskSliceSize max = 2,100,000,000 bytes)
DiskSpanning=yes
DiskSliceSize=max
SlicesPerDisk=1
; CUDA libraries compress little: fast LZMA2 keeps the build time reasonable
Compression=lzma2/fast
SolidCompression=no
; Inno Setup checks the free space itself before copying anything and says how much is needed
ChangesAssociations=yes
; a running LiverPlan holds its files open: Setup asks to close it (Restart Manager) before replacing them
CloseApplications=yes
RestartApplications=no
WizardStyle=modern

[Tasks]
Name: "desktopicon"; Description: "Create a desktop shortcut"; GroupDescription: "Shortcuts:"
Name: "assoc"; Description: "Open .nii, .nii.gz, .nrrd and .seg.nrrd files with LiverPlan (Open with)"; GroupDescription: "File types:"

[InstallDelete]
; an upgrade replaces the application folder's libraries as a whole (no stale DLL from an older version);
; installed models and settings live in %LOCALAPPDATA%\LiverPlan and are never touched
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\LiverPlan"; Filename: "{app}\LiverPlanW.exe"; Comment: "Liver CT segmentation and planning"
Name: "{group}\LiverPlan self-test"; Filename: "{cmd}"; Parameters: "/k ""{app}\liverplan.exe"" --self-test"
Name: "{group}\Uninstall LiverPlan"; Filename: "{uninstallexe}"
Name: "{autodesktop}\LiverPlan"; Filename: "{app}\LiverPlanW.exe"; Tasks: desktopicon

[Registry]
; ProgID: "Open with LiverPlan" for the image formats (not the default program: a clinician's PACS viewer stays)
Root: HKA; Subkey: "Software\Classes\LiverPlan.Image"; ValueType: string; ValueName: ""; ValueData: "CT or label map (LiverPlan)"; Flags: uninsdeletekey; Tasks: assoc
Root: HKA; Subkey: "Software\Classes\LiverPlan.Image\DefaultIcon"; ValueType: string; ValueName: ""; ValueData: "{app}\LiverPlanW.exe,0"; Tasks: assoc
Root: HKA; Subkey: "Software\Classes\LiverPlan.Image\shell\open\command"; ValueType: string; ValueName: ""; ValueData: """{app}\LiverPlanW.exe"" ""%1"""; Tasks: assoc
Root: HKA; Subkey: "Software\Classes\.nii\OpenWithProgids"; ValueType: string; ValueName: "LiverPlan.Image"; ValueData: ""; Flags: uninsdeletevalue; Tasks: assoc
Root: HKA; Subkey: "Software\Classes\.nrrd\OpenWithProgids"; ValueType: string; ValueName: "LiverPlan.Image"; ValueData: ""; Flags: uninsdeletevalue; Tasks: assoc
; Windows keys .nii.gz and .seg.nrrd by their last extension: offered in .gz's Open with list only
Root: HKA; Subkey: "Software\Classes\.gz\OpenWithProgids"; ValueType: string; ValueName: "LiverPlan.Image"; ValueData: ""; Flags: uninsdeletevalue; Tasks: assoc
; DICOM folders: "Open with LiverPlan" in a folder's context menu
Root: HKA; Subkey: "Software\Classes\Directory\shell\LiverPlan"; ValueType: string; ValueName: ""; ValueData: "Open with LiverPlan"; Flags: uninsdeletekey; Tasks: assoc
Root: HKA; Subkey: "Software\Classes\Directory\shell\LiverPlan"; ValueType: string; ValueName: "Icon"; ValueData: "{app}\LiverPlanW.exe,0"; Tasks: assoc
Root: HKA; Subkey: "Software\Classes\Directory\shell\LiverPlan\command"; ValueType: string; ValueName: ""; ValueData: """{app}\LiverPlanW.exe"" ""%1"""; Tasks: assoc

[Run]
Filename: "{app}\LiverPlanW.exe"; Description: "Start LiverPlan now"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; the application folder only; %LOCALAPPDATA%\LiverPlan (models, autosaves, recent cases) stays
Type: filesandordirs; Name: "{app}"
